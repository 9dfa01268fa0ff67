"""Test clients of the HTTP push transports, one shape for all four.

A reader yields *items*: publications (dicts with ``offset`` and ``cursor``) and notices
(``{"op": "gap", …}``). SSE is parsed by ``httpx-sse`` (an independent parser), HTTP streaming by
splitting lines; the polling readers poll with the cursor of the previous answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import orjson
from httpx_sse import aconnect_sse
from prometheus_client.parser import text_string_to_metric_families

DEADLINE = 10.0


def channel_name(prefix: str = "t") -> str:
    return f"{prefix}:{uuid.uuid4().hex[:12]}"


async def publish(client: httpx.AsyncClient, channel: str, *values: Any) -> list[int]:
    offsets = []
    for value in values:
        response = await client.post("/api/publish", json={"channel": channel, "data": value})
        response.raise_for_status()
        offsets.append(response.json()["offset"])
    return offsets


class Reader:
    """Base: ``await start()`` (returns the ready notice), ``await take(n)``, ``await close()``."""

    path = ""

    def __init__(self, client: httpx.AsyncClient, channels: list[str], cursor: str | None = None) -> None:
        self.client = client
        self.channels = channels
        self.cursor = cursor
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    def params(self, **extra: Any) -> list[tuple[str, Any]]:
        params: list[tuple[str, Any]] = [("channel", ch) for ch in self.channels]
        if self.cursor:
            params.append(("cursor", self.cursor))
        params.extend(extra.items())
        return params

    async def start(self) -> dict[str, Any]:
        self.task = asyncio.get_running_loop().create_task(self.run())
        return await self.next_item()

    async def run(self) -> None:
        raise NotImplementedError

    async def next_item(self) -> dict[str, Any]:
        """The next item; raises if the reader failed (or nothing came within the deadline)."""
        if self.queue.empty() and self.task is not None:
            getter = asyncio.ensure_future(self.queue.get())
            await asyncio.wait((getter, self.task), timeout=DEADLINE, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                return getter.result()
            getter.cancel()
            if self.task.done():
                self.task.result()
                raise AssertionError("the stream ended")
            raise TimeoutError("no item within the deadline")
        async with asyncio.timeout(DEADLINE):
            return await self.queue.get()

    async def take(self, n: int) -> list[dict[str, Any]]:
        return [await self.next_item() for _ in range(n)]

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


class SSEReader(Reader):
    path = "/sse"

    async def run(self) -> None:
        async with aconnect_sse(self.client, "GET", "/sse", params=self.params()) as source:
            source.response.raise_for_status()
            async for event in source.aiter_sse():
                item = orjson.loads(event.data)
                if event.event in ("ready", "gap", "disconnect"):
                    item["op"] = event.event
                else:
                    item["sse_id"] = event.id
                    item["sse_event"] = event.event
                await self.queue.put(item)


class StreamReader(Reader):
    path = "/stream"

    async def run(self) -> None:
        async with self.client.stream("GET", "/stream", params=self.params()) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if line:
                    item = orjson.loads(line)
                    if item.get("op") != "heartbeat":
                        await self.queue.put(item)


class PollReader(Reader):
    """Short polling (``timeout=0``) or long polling (``timeout`` > 0) from a cursor."""

    path = "/poll"

    def __init__(
        self, client: httpx.AsyncClient, channels: list[str], cursor: str | None = None, timeout: float = 0
    ) -> None:
        super().__init__(client, channels, cursor)
        self.timeout = timeout

    async def start(self) -> dict[str, Any]:
        if self.cursor is None:  # where the channels stand now: every later message follows
            answer = await self.poll(0)
            self.cursor = answer["cursor"]
        self.task = asyncio.get_running_loop().create_task(self.run())
        return {"op": "ready", "cursor": self.cursor}

    async def poll(self, wait: float) -> dict[str, Any]:
        response = await self.client.get("/poll", params=self.params(timeout=wait))
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer

    async def run(self) -> None:
        while True:
            answer = await self.poll(self.timeout)
            for gap in answer["gaps"]:
                await self.queue.put({"op": "gap", **gap})
            for message in answer["messages"]:
                await self.queue.put(message)
            self.cursor = answer["cursor"]
            if not answer["messages"] and self.timeout == 0:
                await asyncio.sleep(0.02)  # a short-polling client's interval


def reader(kind: str, client: httpx.AsyncClient, channels: list[str], cursor: str | None = None) -> Reader:
    if kind == "sse":
        return SSEReader(client, channels, cursor)
    if kind == "stream":
        return StreamReader(client, channels, cursor)
    if kind == "longpoll":
        return PollReader(client, channels, cursor, timeout=5)
    return PollReader(client, channels, cursor, timeout=0)


TRANSPORTS = ["sse", "stream", "longpoll", "poll"]
PATHS = {"sse": "/sse", "stream": "/stream", "longpoll": "/poll", "poll": "/poll"}


async def slow_consumers(http: httpx.AsyncClient, transport: str) -> float:
    text = (await http.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name == "tidings_slow_consumer_disconnects_total"
                and sample.labels.get("transport") == transport
            ):
                return sample.value
    return 0.0


def dechunk(body: bytes) -> bytes:
    """The payload of a chunked body (up to its last chunk, or as far as it goes)."""
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out, body = out + body[:size], body[size + 2 :]
    return out


async def wait_until(condition: Callable[[], bool], what: str, deadline: float = 10.0) -> None:
    """Wait until ``condition()`` holds; fail naming ``what`` after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)
