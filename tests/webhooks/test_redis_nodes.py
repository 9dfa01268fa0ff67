"""Two ``tidings serve`` nodes sharing one Redis share one webhook queue: each publication is
delivered once per endpoint (not once per node), and a node killed with SIGKILL while it holds
deliveries (in flight and queued) has them taken over by the other node once its leases end."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from tests.nodes import NodeProcess, start_all
from tests.redis_server import RedisServer, redis_available

from conftest import Receiver, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not redis_available(), reason="redis-server is not installed"),
]

LEASE = 2.0
NODE_ENV = {
    "TIDINGS_WEBHOOKS__ALLOW_PRIVATE": '["127.0.0.0/8"]',
    "TIDINGS_WEBHOOKS__LEASE": str(LEASE),
    "TIDINGS_WEBHOOKS__POLL_INTERVAL": "0.1",
    "TIDINGS_WEBHOOKS__RETRY_SCHEDULE": "[0.2, 0.5, 1, 1, 1, 1, 1]",
    "TIDINGS_WEBHOOKS__TIMEOUT": "60",
    "TIDINGS_WEBHOOKS__THROTTLE_FLOOR": "0.2",
}


@contextlib.asynccontextmanager
async def two_nodes() -> AsyncIterator[tuple[NodeProcess, NodeProcess]]:
    redis_server = RedisServer()
    await asyncio.to_thread(redis_server.start)
    nodes = [NodeProcess(broker=redis_server.url, env=NODE_ENV) for _ in range(2)]
    try:
        await asyncio.to_thread(start_all, nodes)
        yield nodes[0], nodes[1]
    finally:
        for node in nodes:
            await asyncio.to_thread(node.kill)
            await asyncio.to_thread(node.stop)
        await asyncio.to_thread(redis_server.stop)


async def create_everywhere(nodes: tuple[NodeProcess, NodeProcess], url: str) -> str:
    """Create the endpoint through the first node; return once every node knows it."""
    async with httpx.AsyncClient(timeout=10) as client:
        created = await client.post(
            f"{nodes[0].url}/api/webhooks", json={"url": url, "channels": ["orders:*"]}
        )
        assert created.status_code == 201, created.text
        endpoint_id: str = created.json()["id"]
        for node in nodes[1:]:
            for _ in range(200):
                listed = (await client.get(f"{node.url}/api/webhooks")).json()["webhooks"]
                if any(e["id"] == endpoint_id for e in listed):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the second node never saw the endpoint")
    return endpoint_id


async def publish(client: httpx.AsyncClient, node: NodeProcess, data: Any) -> None:
    response = await client.post(f"{node.url}/api/publish", json={"channel": "orders:1", "data": data})
    assert response.status_code == 200, response.text


async def succeeded(node: NodeProcess, endpoint_id: str) -> int:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(
            f"{node.url}/api/webhooks/{endpoint_id}/deliveries", params={"status": "succeeded", "limit": 1000}
        )
        assert response.status_code == 200, response.text
        return len(response.json()["deliveries"])


async def test_two_nodes_on_one_redis_deliver_each_publication_once_per_endpoint(receiver: Receiver) -> None:
    accepted: set[str] = set()

    async def answer(request: Request, count: int) -> Response:
        accepted.add(request.headers["webhook-id"])
        return Response(status_code=200)

    url = receiver.on("/sink", answer)

    async with two_nodes() as nodes:
        endpoint_id = await create_everywhere(nodes, url)
        async with httpx.AsyncClient(timeout=10) as client:
            await asyncio.gather(*(publish(client, nodes[n % 2], n) for n in range(60)))
        await wait_for(lambda: len(accepted) == 60, what="60 deliveries")
        # Every delivery is recorded as succeeded, so nothing will be sent again.
        deadline = asyncio.get_running_loop().time() + 15
        while await succeeded(nodes[1], endpoint_id) < 60:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)

    got = receiver.at("/sink")
    assert len(got) == 60  # once per endpoint, not once per node
    assert sorted(r.json()["data"] for r in got) == list(range(60))
    assert len({r.webhook_id for r in got}) == 60


async def test_kill_9_of_the_node_holding_deliveries_hands_them_to_the_other_node(receiver: Receiver) -> None:
    hanging = True
    release = asyncio.Event()
    accepted: set[str] = set()

    async def answer(request: Request, count: int) -> Response:
        if hanging:
            await release.wait()  # the attempt stays in flight until the sender is killed
            return Response(status_code=503)
        accepted.add(request.headers["webhook-id"])
        return Response(status_code=200)

    url = receiver.on("/sink", answer)

    async with two_nodes() as nodes:
        holder, other = nodes
        endpoint_id = await create_everywhere(nodes, url)
        async with httpx.AsyncClient(timeout=10) as client:
            for n in range(20):
                await publish(client, holder, n)  # enqueued by, and held by, the holder
        # 4 in flight (concurrency_per_endpoint), 16 queued in the holder's lane.
        await wait_for(lambda: len(receiver.at("/sink")) >= 4, what="attempts in flight")
        seen_before = {r.webhook_id for r in receiver.at("/sink")}
        await asyncio.to_thread(holder.kill)
        hanging = False
        release.set()
        # The other node waits for the leases to end, then takes everything over.
        await wait_for(
            lambda: len(accepted) == 20,
            within=LEASE + 20,
            what="all 20 deliveries through the surviving node",
        )
        deadline = asyncio.get_running_loop().time() + 15
        while await succeeded(other, endpoint_id) < 20:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)

    by_id: dict[str, set[bytes]] = {}
    for got in receiver.at("/sink"):
        by_id.setdefault(got.webhook_id, set()).add(got.body)
    assert len(by_id) == 20
    assert all(len(bodies) == 1 for bodies in by_id.values())  # duplicates share their id
    assert sorted(json.loads(next(iter(b)))["data"] for b in by_id.values()) == list(range(20))
    assert seen_before <= accepted
