"""Several nodes on one Redis (and on a Redis Cluster), and a SQLite node restarted."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import tidings
from tests.e2e.live import wait_live
from tests.nodes import NodeProcess, start_all
from tests.redis_server import RedisCluster, RedisServer, redis_available
from tests.wsclient import WS

pytestmark = pytest.mark.skipif(not redis_available(), reason="redis-server is not installed")


@pytest.fixture(autouse=True)
def engine() -> str:
    """Once, not once per engine (tests/e2e/conftest.py): these nodes are ``tidings serve``
    processes on its default engine, which the engine fixture does not reach; what is tested here
    is the broker between them."""
    return "fast"


@contextlib.contextmanager
def nodes(broker: str, count: int) -> Iterator[list[NodeProcess]]:
    started = [NodeProcess(broker=broker) for _ in range(count)]
    try:
        yield start_all(started)
    finally:
        for node in started:
            node.stop()


async def publish(node: NodeProcess, channel: str, data: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
        return await client.post("/api/publish", json={"channel": channel, "data": data})


async def check_http_transports_across_nodes(one: NodeProcess, two: NodeProcess, three: NodeProcess) -> None:
    """SSE, streaming and long polling on nodes 2 and 3 receive what node 1 accepted."""
    clients = [
        tidings.Client(node.url, transport=t, long_poll_timeout=2)
        for node in (two, three)
        for t in ("sse", "stream", "longpoll")
    ]
    subs = [c.subscribe("multi") for c in clients]
    try:
        await wait_live(subs, lambda marker: publish(one, "multi", marker))
        for i in range(5):
            await publish(one, "multi", i)
        for sub in subs:
            got = [(await asyncio.wait_for(sub.__anext__(), 10)).data for _ in range(5)]  # type: ignore[union-attr]
            assert got == list(range(5))
    finally:
        for client in clients:
            await client.close()


async def check_multi_node_delivery(broker: str) -> None:
    with nodes(broker, 3) as (one, two, three):
        await check_http_transports_across_nodes(one, two, three)
        async with await WS.open(two.ws_url) as a, await WS.open(three.ws_url) as b:
            await a.request("subscribe", channel="news")
            await b.request("subscribe", channel="news")
            for i in range(5):
                assert (await publish(one, "news", i)).status_code == 200
            got_a = await a.messages(5)
            got_b = await b.messages(5)
        assert [m["data"] for m in got_a] == [m["data"] for m in got_b] == list(range(5))
        last = got_a[2]
        async with await WS.open(three.ws_url) as c:  # a position from node 2, resumed on 3
            sub = await c.request(
                "subscribe", channel="news", since={"epoch": last["epoch"], "offset": last["offset"]}
            )
            assert sub["recovered"] is True
            assert [m["data"] for m in await c.messages(2)] == [3, 4]


async def test_a_publication_on_one_node_reaches_subscribers_on_the_others():
    with RedisServer() as redis:
        await check_multi_node_delivery(redis.url)


async def test_multi_node_delivery_on_a_redis_cluster():
    with RedisCluster() as cluster:
        await check_multi_node_delivery(cluster.url)


async def test_a_client_moves_to_another_node_when_its_node_is_killed():
    with RedisServer() as redis, nodes(redis.url, 2) as (one, two):
        seen: list[int] = []
        async with await WS.open(one.ws_url) as ws:
            await ws.request("subscribe", channel="flow")

            async def publish_all() -> None:
                for i in range(60):
                    assert (await publish(two, "flow", i)).status_code == 200
                    await asyncio.sleep(0.005)

            publisher = asyncio.create_task(publish_all())
            while len(seen) < 20:
                msg = (await ws.messages(1))[0]
                seen.append(msg["offset"])
                epoch = msg["epoch"]
            one.kill()
            with contextlib.suppress(Exception):
                while True:
                    seen.append((await ws.messages(1, timeout=2))[0]["offset"])
        await publisher
        async with await WS.open(two.ws_url) as ws:
            sub = await ws.request("subscribe", channel="flow", since={"epoch": epoch, "offset": seen[-1]})
            assert sub["recovered"] is True
            rest = await ws.messages(60 - len(seen))
        seen += [m["offset"] for m in rest]
        assert seen == list(range(1, 61))


async def test_redis_outage_gives_503_and_no_node_crashes_and_restart_empty_gives_new_epochs():
    with RedisServer() as redis, nodes(redis.url, 2) as (one, two):
        async with await WS.open(two.ws_url) as ws:
            await ws.request("subscribe", channel="outage")
            first = (await publish(one, "outage", "before")).json()
            redis.kill()
            during = await publish(one, "outage", "during")
            assert during.status_code == 503
            assert during.json()["error"]["code"] == "unavailable"
            redis.restart()  # empty: the channel gets a new epoch
            for _ in range(100):
                after = await publish(one, "outage", "after")
                if after.status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert after.status_code == 200
            assert after.json()["epoch"] != first["epoch"]
            frames = []
            while not any(f.get("data") == "after" for f in frames):
                frames.append(await ws.recv())
            # The subscriber saw "before", then either "after" alone after a gap notice, or
            # "after": never "during", never a silent jump without a notice.
            data = [f["data"] for f in frames if f["op"] == "message"]
            assert data[0] == "before" and data[-1] == "after" and "during" not in data
            assert any(f["op"] == "gap" for f in frames)
        assert one.alive and two.alive
        async with await WS.open(two.ws_url) as ws:
            sub = await ws.request(
                "subscribe", channel="outage", since={"epoch": first["epoch"], "offset": first["offset"]}
            )
            assert sub["recovered"] is False


async def test_sqlite_node_restarted_between_publishes_resumes_recovered(tmp_path: Path):
    broker = f"sqlite:///{tmp_path / 'tidings.db'}"
    node = NodeProcess(broker=broker, cwd=tmp_path).start()
    try:
        first = (await publish(node, "durable", 1)).json()
        node.stop()
        node.start()
        assert (await publish(node, "durable", 2)).json()["epoch"] == first["epoch"]
        async with await WS.open(node.ws_url) as ws:
            sub = await ws.request(
                "subscribe", channel="durable", since={"epoch": first["epoch"], "offset": first["offset"]}
            )
            assert sub["recovered"] is True
            assert [m["data"] for m in await ws.messages(1)] == [2]
    finally:
        node.stop()
