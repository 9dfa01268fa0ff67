"""What a publish may carry, on every path (WebSocket, POST /api/publish, /api/broadcast), both
engines, memory and SQLite brokers: data nested deeper than ``limits.max_json_depth`` or larger
than the namespace's ``max_message_bytes`` is refused with a clear error before anything is
stored, and the channel keeps working for everyone: live subscribers, resumes and history reads
on every transport. A publication stored before these checks that cannot be delivered is
delivered withheld, and no read breaks on it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.redis_server import RedisServer, redis_available
from tests.serving import RunningServer, serve
from tests.transports.readers import SSEReader, StreamReader
from tests.wsclient import WS
from tidings.core.cursor import encode_token
from tidings.core.payload import MAX_DELIVERABLE_DEPTH, WITHHELD_EVENT
from tidings.core.position import Position
from tidings.ids import random_id
from tidings.node import Node
from tidings.settings import load_settings

LIMIT = 64  # limits.max_json_depth's default
DEEP = (255, 500, 1023, LIMIT + 1)


def nested(depth: int) -> str:
    """JSON text of ``depth`` nested arrays around 1 (``nested(0)`` is ``1``)."""
    return "[" * depth + "1" + "]" * depth


def value(depth: int) -> Any:
    return orjson.loads(nested(depth))


@pytest.fixture(params=["memory", "sqlite"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory" if request.param == "memory" else f"sqlite:///{tmp_path / 'tidings.db'}"


@pytest.fixture
def server(broker: str) -> Iterator[RunningServer]:
    # The namespace's own limit is below the default one: the namespace's must hold.
    with serve(
        broker=broker,
        namespaces={"small": {"max_message_bytes": 65536}},
        limits={"max_message_bytes": 1_000_000},
        sse={"retry_ms": 100, "heartbeat": 5},
    ) as running:
        yield running


async def api_publish(
    client: httpx.AsyncClient, channel: str, data_json: str, path: str = "/api/publish"
) -> httpx.Response:
    if path == "/api/broadcast":
        body = f'{{"channels":["{channel}"],"data":{data_json}}}'
    else:
        body = f'{{"channel":"{channel}","data":{data_json}}}'
    return await client.post(path, content=body, headers={"content-type": "application/json"})


async def check_reads(
    server: RunningServer, channel: str, epoch: str, expected: list[Any]
) -> list[dict[str, Any]]:
    """Every way to read the channel from its start (WebSocket ``since`` and ``history``, SSE,
    stream, short and long poll, the history API) answers, with offsets 1..n in order;
    returns what the WebSocket resume delivered."""
    n = len(expected)
    async with await WS.open(server.ws_url) as ws:
        reply = await ws.request("subscribe", channel=channel, since={"epoch": epoch, "offset": 0})
        assert reply["op"] == "subscribed" and reply["recovered"] is True, reply
        resumed = await ws.messages(n)
        assert [m["offset"] for m in resumed] == list(range(1, n + 1))
        history = await ws.request("history", channel=channel, since={"epoch": epoch, "offset": 0})
        assert history["op"] == "history", history
        assert [p["offset"] for p in history["publications"]] == list(range(1, n + 1))
    cursor = encode_token(channel, Position(epoch, 0))
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        for reader_type in (SSEReader, StreamReader):
            reader = reader_type(client, [channel], cursor)
            try:
                await reader.start()
                items = await reader.take(n)
            finally:
                await reader.close()
            assert [i["offset"] for i in items] == list(range(1, n + 1)), reader_type
        for timeout in (0, 1):
            poll = await client.get(
                "/poll", params={"channel": channel, "cursor": cursor, "timeout": timeout}
            )
            assert poll.status_code == 200, poll.text
            assert [m["offset"] for m in poll.json()["messages"]] == list(range(1, n + 1))
        api = await client.get(f"/api/channels/{channel}/history", params={"since": 0})
        assert api.status_code == 200, api.text
        assert [p["offset"] for p in api.json()["publications"]] == list(range(1, n + 1))
    assert [m["data"] for m in resumed] == expected
    return resumed


async def test_deep_data_is_refused_on_every_path_and_the_channel_keeps_working(
    server: RunningServer,
) -> None:
    channel = "chat:deep"
    async with (
        await WS.open(server.ws_url) as live,
        await WS.open(server.ws_url) as publisher,
        httpx.AsyncClient(base_url=server.url, timeout=10) as client,
    ):
        subscribed = await live.request("subscribe", channel=channel)
        epoch = subscribed["epoch"]
        accepted = await api_publish(client, channel, nested(LIMIT))
        assert accepted.status_code == 200, accepted.text
        for depth in DEEP:
            ref = 1000 + depth
            await publisher.conn.send(
                f'{{"op":"publish","ref":{ref},"channel":"{channel}","data":{nested(depth)}}}'
            )
            reply = await publisher.recv()
            assert reply["ref"] == ref and reply["op"] == "error", reply
            assert reply["code"] == "bad_request" and "deeper than 64" in reply["message"]
            for path in ("/api/publish", "/api/broadcast"):
                refused = await api_publish(client, channel, nested(depth), path)
                assert refused.status_code == 400, (path, depth, refused.text)
                assert refused.json()["error"]["code"] == "bad_request"
                assert "limits.max_json_depth" in refused.json()["error"]["message"]
        # A frame too deep even to parse is refused the same way; the connection stays open.
        await publisher.conn.send(f'{{"op":"publish","channel":"{channel}","data":{nested(2000)}}}')
        assert (await publisher.recv())["code"] == "bad_request"
        assert (await publisher.request("publish", channel=channel, data=value(LIMIT)))["op"] == "published"
        live_messages = await live.messages(2)
    expected = [value(LIMIT), value(LIMIT)]
    assert [(m["offset"], m["data"]) for m in live_messages] == [(1, expected[0]), (2, expected[1])]
    await check_reads(server, channel, epoch, expected)


async def test_hostile_publishers_racing_good_ones_store_only_the_good_in_order(
    server: RunningServer,
) -> None:
    # Several anonymous clients at once, each mixing too-deep and too-large publishes with
    # good ones: every bad one gets its error reply on a connection that stays
    # open, the good ones get gap-free offsets, and every reader sees exactly the good ones.
    channel, clients, rounds = "small:race", 4, 15
    bad = [nested(300), nested(1023), nested(LIMIT + 1), '"' + "x" * 70_000 + '"']

    async def hostile(n: int) -> list[int]:
        offsets = []
        async with await WS.open(server.ws_url) as ws:
            for i in range(rounds):
                for j, data in enumerate(bad):
                    await ws.conn.send(f'{{"op":"publish","ref":{j},"channel":"{channel}","data":{data}}}')
                good = await ws.send("publish", channel=channel, data=[n, i])
                replies = await replies_until(ws, good)
                assert [(r["ref"], r["op"]) for r in replies[:-1]] == [
                    (j, "error") for j in range(len(bad))
                ], replies
                assert replies[-1]["op"] == "published", replies
                offsets.append(replies[-1]["offset"])
        return offsets

    async with await WS.open(server.ws_url) as live:
        subscribed = await live.request("subscribe", channel=channel)
        results = await asyncio.gather(*(hostile(n) for n in range(clients)))
        received = await live.messages(clients * rounds)
    offsets = sorted(o for r in results for o in r)
    assert offsets == list(range(1, clients * rounds + 1))
    assert [m["offset"] for m in received] == offsets
    await check_reads(server, channel, subscribed["epoch"], [m["data"] for m in received])


@pytest.mark.parametrize("size", [70_000, 200_000, 900_000])
async def test_api_publish_and_broadcast_hold_the_namespace_message_limit(
    server: RunningServer, size: int
) -> None:
    data = "x" * size
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        refused = await client.post("/api/publish", json={"channel": "small:a", "data": data})
        assert refused.status_code == 413, refused.text
        error = refused.json()["error"]
        assert error["code"] == "too_large"
        assert "65536" in error["message"] and "'small'" in error["message"]
        # All or nothing: big:a's namespace (the default, 1 MB) allows it, but small:a's does
        # not, so neither is published to.
        broadcast = await client.post("/api/broadcast", json={"channels": ["big:a", "small:a"], "data": data})
        assert broadcast.status_code == 413, broadcast.text
        for channel in ("small:a", "big:a"):
            history = await client.get(f"/api/channels/{channel}/history")
            assert history.json()["publications"] == []
        async with await WS.open(server.ws_url) as ws:
            reply = await ws.request("publish", channel="small:a", data="y" * 70_000)
            assert reply["op"] == "error" and reply["code"] == "too_large", reply
            assert (await ws.request("ping"))["op"] == "pong"
        within = await client.post("/api/publish", json={"channel": "small:a", "data": "x" * 65_000})
        assert within.status_code == 200, within.text


async def replies_until(ws: WS, ref: int) -> list[dict[str, Any]]:
    """The replies the server sent, up to and including the one to ``ref`` (they come in
    order); other frames (messages, presence) are skipped."""
    replies = []
    while True:
        frame = await ws.recv()
        if "ref" in frame:
            replies.append(frame)
            if frame["ref"] == ref and frame["op"] != "error":
                return replies


@pytest.fixture(params=["sqlite", "redis"])
def stored_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A broker that keeps history across processes (what an older version may have filled)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    if not redis_available():
        pytest.skip("redis-server is not installed")
    with RedisServer() as redis:
        yield redis.url


def deepest_storable(broker: str) -> int:
    """The deepest data the broker could store unchecked: its encoder writes 254 levels, and
    Redis stores data inside the publication object. Deeper than any reply can carry."""
    return 254 if broker.startswith("sqlite") else 253


async def store_unchecked(node: Node, channel: str, data: Any) -> None:
    """Store ``data`` as a version without the checks did: straight into the broker."""
    await node.broker.publish(
        channel,
        data,
        event="message",
        options=node.options(channel),
        publication_id=random_id(),
        now_ms=time.time_ns() // 1_000_000,
    )


async def test_a_stored_publication_that_cannot_be_delivered_is_withheld_not_breaking_reads(
    stored_broker: str,
) -> None:
    channel = "chat:old"
    too_deep = value(deepest_storable(stored_broker))
    async with Node(load_settings(broker=stored_broker)) as old:
        first = await old.publish(channel, "before")
        await store_unchecked(old, channel, too_deep)
        await old.publish(channel, "after")
    epoch = first.publication.epoch
    with serve(broker=stored_broker, sse={"retry_ms": 100, "heartbeat": 5}) as server:
        resumed = await check_reads(
            server,
            channel,
            epoch,
            [
                "before",
                {
                    "error": {
                        "code": "internal",
                        "message": (
                            f"publication withheld: its data nests deeper than {MAX_DELIVERABLE_DEPTH} "
                            "levels and cannot be delivered"
                        ),
                    }
                },
                "after",
            ],
        )
        assert [m["event"] for m in resumed] == ["message", WITHHELD_EVENT, "message"]


@pytest.fixture
def redis_url() -> Iterator[str]:
    if not redis_available():
        pytest.skip("redis-server is not installed")
    with RedisServer() as redis:
        yield redis.url


async def test_a_live_publication_another_node_stored_unchecked_is_withheld(redis_url: str) -> None:
    stored_broker = redis_url
    channel = "chat:live"
    with serve(broker=stored_broker) as server:
        async with await WS.open(server.ws_url) as live, Node(load_settings(broker=stored_broker)) as other:
            await live.request("subscribe", channel=channel)
            await store_unchecked(other, channel, value(deepest_storable(stored_broker)))
            await other.publish(channel, "after")
            messages = await live.messages(2)
    assert [(m["offset"], m["event"]) for m in messages] == [(1, WITHHELD_EVENT), (2, "message")]
