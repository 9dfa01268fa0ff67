"""Exactly once when a resume races live publications, across nodes on one real Redis.

A client takes a cursor, then resumes on another node while the first node publishes a burst.
The resuming node reads history over one Redis connection and receives the burst over its
Pub/Sub link, another connection: the history read can return a publication the link has yet
to hand over, and both must not reach the client. Each try uses a new channel, so the resuming
node subscribes it on Redis just then (the link's first delivery for it races the read). A
process burning CPU in the background and short, repeated pauses of Redis (``CLIENT PAUSE``, as
a busy Redis stalls) widen the race; the tries run a few at a time.

The bounded version runs in the normal suite (a few seconds per transport and engine); the
``slow`` one runs many more tries.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from tests.redis_server import RedisServer, redis_available
from tests.serving import RunningServer, serve
from tests.transports.readers import Reader, channel_name, reader
from tests.wsclient import WS
from tidings.core.cursor import encode_token
from tidings.core.position import Position

pytestmark = pytest.mark.skipif(not redis_available(), reason="redis-server is not installed")

BURST = 5
DEADLINE = 10.0


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@contextlib.contextmanager
def cpu_burner() -> Iterator[None]:
    """A process spinning on a core for as long as the block runs."""
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        process.kill()
        process.wait(10)


@contextlib.asynccontextmanager
async def stalling(redis: RedisServer, every: float) -> AsyncIterator[None]:
    """Pause every Redis client for a moment, again and again (``CLIENT PAUSE``), as a busy
    Redis does: commands pile up and are answered together, so a history read's reply and the
    Pub/Sub messages of the publications it returned reach the resuming node at once."""

    async def pause() -> None:
        connection = aioredis.Redis.from_url(redis.url)
        try:
            while True:
                await connection.execute_command("CLIENT", "PAUSE", int(every * 1000), "ALL")
                await asyncio.sleep(every * 1.5)
        finally:
            await connection.aclose()

    task = asyncio.get_running_loop().create_task(pause())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.contextmanager
def three_nodes(redis: RedisServer) -> Iterator[list[RunningServer]]:
    with serve(broker=redis.url) as one, serve(broker=redis.url) as two, serve(broker=redis.url) as three:
        yield [one, two, three]


class Tries:
    """Resumes on each transport, raced against a burst of publications."""

    def __init__(
        self, publisher: httpx.AsyncClient, resumer: RunningServer, client: httpx.AsyncClient
    ) -> None:
        self.publisher = publisher
        self.resumer = resumer
        self.client = client

    async def publish(self, channel: str, value: Any) -> dict[str, Any]:
        response = await self.publisher.post("/api/publish", json={"channel": channel, "data": value})
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer

    async def one(self, transport: str) -> list[int]:
        """The offsets one resume received from its cursor (after offset 1) up to a marker
        published once the burst was read: exactly ``[2, …, BURST + 2]`` when all is well."""
        channel = channel_name("race")
        first = await self.publish(channel, 0)
        since = Position(first["epoch"], first["offset"])
        burst = asyncio.gather(*(self.publish(channel, i) for i in range(1, BURST + 1)))
        try:
            if transport == "ws":
                return await self._ws(channel, since, burst)
            return await self._http(transport, channel, since, burst)
        finally:
            await burst

    async def _collect(self, take: Any, channel: str, burst: Any) -> list[int]:
        offsets: list[int] = []
        marker = 0
        async with asyncio.timeout(DEADLINE):
            while marker == 0 or marker not in offsets:
                item = await take()
                if item.get("op") not in (None, "message"):
                    if item["op"] == "gap":
                        raise AssertionError(f"unexpected gap: {item}")
                    continue
                offsets.append(item["offset"])
                if marker == 0 and BURST + 1 in offsets:
                    await burst
                    marker = (await self.publish(channel, "marker"))["offset"]
        return offsets

    async def _http(self, transport: str, channel: str, since: Position, burst: Any) -> list[int]:
        stream: Reader = reader(transport, self.client, [channel], encode_token(channel, since))
        try:
            await stream.start()  # the ready notice
            return await self._collect(stream.next_item, channel, burst)
        finally:
            await stream.close()

    async def _ws(self, channel: str, since: Position, burst: Any) -> list[int]:
        async with await WS.open(self.resumer.ws_url) as ws:
            reply = await ws.request("subscribe", channel=channel, since=since.to_dict())
            assert reply["op"] == "subscribed" and reply["recovered"] is True, reply
            return await self._collect(ws.recv, channel, burst)


STALL = 0.02  # seconds Redis is paused, once every 1.5 × STALL


TRANSPORTS = ("stream", "sse", "ws")


async def race(redis: RedisServer, rounds: int) -> list[tuple[str, list[int]]]:
    """Run ``rounds`` batches of two resumes per transport at once; returns the inexact ones."""
    expected = list(range(2, BURST + 3))
    wrong: list[tuple[str, list[int]]] = []
    batch = TRANSPORTS * 2
    with three_nodes(redis) as (one, _two, three), cpu_burner():
        async with (
            httpx.AsyncClient(base_url=one.url, timeout=DEADLINE) as publisher,
            httpx.AsyncClient(base_url=three.url, timeout=DEADLINE) as client,
            stalling(redis, STALL),
            asyncio.timeout(30 + 3 * rounds),
        ):
            runner = Tries(publisher, three, client)
            for _ in range(rounds):
                got = await asyncio.gather(*(runner.one(transport) for transport in batch))
                wrong.extend(
                    (t, offsets) for t, offsets in zip(batch, got, strict=True) if offsets != expected
                )
    return wrong


# Before the fix (a resumed subscriber went live without a check against what its history read
# had already sent), this test found 20 (fast) and 7 (asgi) of 90 resumes with a repeat on a
# loaded 2-core machine, e.g. [2, 3, 4, 4, 5, 6, 7] and [2, 3, 4, 5, 6, 5, 6, 7]; after, none.
async def test_resumes_across_nodes_racing_a_burst_get_each_publication_exactly_once(
    redis: RedisServer,
) -> None:
    wrong = await race(redis, rounds=15)  # 30 resumes per transport
    assert wrong == [], f"{len(wrong)} of 90 resumes were not exact: {wrong[:5]}"


@pytest.mark.long
async def test_many_resumes_across_nodes_racing_bursts_get_each_publication_exactly_once(
    redis: RedisServer,
) -> None:
    wrong = await race(redis, rounds=150)  # 300 resumes per transport
    assert wrong == [], f"{len(wrong)} of 900 resumes were not exact: {wrong[:5]}"
