"""The CLI's subscribe loop over the HTTP push transports: SSE, NDJSON streaming, polling.

Publications go to ``emit`` (one JSON object each), gaps and other notices to ``notice``. The
loop keeps the cursor of the last thing it saw and, when the connection drops or the server ends
the stream, reconnects with it after a short back-off, so nothing is missed or repeated. A
refusal (4xx) ends it with :class:`ValueError`; failing to connect at all raises :class:`OSError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson

from tidings.core.wire.sse import SSEParser

__all__ = ["run_http_subscribe"]

TRANSPORTS = ("sse", "stream", "longpoll", "poll")
LONG_POLL_TIMEOUT = 25.0
MAX_BACKOFF = 5.0
NOTICES = frozenset({"ready", "gap", "disconnect", "heartbeat"})


class _Refused(Exception):
    pass


class HTTPSubscriber:
    """State of one subscribe loop: the cursor and how many publications were emitted."""

    def __init__(self, client: httpx.AsyncClient, channels: list[str], cursor: str | None,
                 count: int | None, emit: Callable[[Any], None],
                 notice: Callable[[Any], None]) -> None:
        self.client = client
        self.channels = channels
        self.cursor = cursor
        self.count = count
        self.emit = emit
        self.notice = notice
        self.received = 0
        self.connected = False
        self.retry = 1.0

    @property
    def done(self) -> bool:
        return self.count is not None and self.received >= self.count

    def params(self, **extra: Any) -> list[tuple[str, Any]]:
        params: list[tuple[str, Any]] = [("channel", ch) for ch in self.channels]
        if self.cursor:
            params.append(("cursor", self.cursor))
        params.extend(extra.items())
        return params

    def handle(self, op: str | None, obj: dict[str, Any]) -> None:
        """One item from the server: a publication (no op) or a notice."""
        if "cursor" in obj:
            self.cursor = obj["cursor"]
        if op is None:
            self.emit(obj)
            self.received += 1
        elif op in ("gap", "disconnect"):
            self.notice({"op": op, **obj})

    async def check(self, response: httpx.Response) -> None:
        if 400 <= response.status_code < 500:
            await response.aread()
            try:
                error = response.json()["error"]
                message = f"{response.status_code} {error['code']}: {error['message']}"
            except (ValueError, KeyError, TypeError):
                message = f"{response.status_code} {response.reason_phrase}"
            raise _Refused(message)
        response.raise_for_status()
        self.connected = True

    # transports ---------------------------------------------------------------------------------

    async def sse(self) -> None:
        async with self.client.stream("GET", "/sse", params=self.params(),
                                      headers={"Accept": "text/event-stream"}) as response:
            await self.check(response)
            parser = SSEParser()
            async for chunk in response.aiter_bytes():
                for message in parser.feed(chunk):
                    data = orjson.loads(message.data)
                    event = message.event if message.event in NOTICES else None
                    self.handle(event, data)
                    if self.done:
                        return
            if parser.retry is not None:
                self.retry = parser.retry / 1000

    async def _lines(self, response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
        async for line in response.aiter_lines():
            if line.strip():
                yield orjson.loads(line)

    async def stream(self) -> None:
        async with self.client.stream("GET", "/stream", params=self.params()) as response:
            await self.check(response)
            async for obj in self._lines(response):
                self.handle(obj.pop("op", None), obj)
                if self.done:
                    return

    async def poll(self, wait: float, etag: str | None = None) -> str | None:
        """One poll; returns the answer's ETag (short polling sends it back)."""
        headers = {"If-None-Match": etag} if etag else {}
        response = await self.client.get("/poll", params=self.params(timeout=wait),
                                         headers=headers)
        if response.status_code == 304:
            return etag
        await self.check(response)
        answer = response.json()
        for gap in answer["gaps"]:
            self.notice({"op": "gap", **gap})
        for message in answer["messages"]:
            self.handle(None, message)
            if self.done:
                return None
        self.cursor = answer["cursor"]
        fresh: str | None = response.headers.get("etag")
        return fresh

    async def polls(self, wait: float, interval: float) -> None:
        etag: str | None = None
        while not self.done:
            etag = await self.poll(wait, etag)
            if wait == 0:
                await asyncio.sleep(interval)


async def run_http_subscribe(url: str, channels: list[str], *, transport: str,
                             cursor: str | None, token: str | None, count: int | None,
                             emit: Callable[[Any], None], notice: Callable[[Any], None],
                             interval: float = 1.0) -> None:
    """Subscribe over ``transport`` until ``count`` publications (or forever), resuming on drops.

    ``interval`` is the pause between short polls (``transport="poll"``).
    """
    if transport not in TRANSPORTS:
        raise ValueError(f"unknown transport {transport!r}: use ws, {', '.join(TRANSPORTS)}")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = httpx.Timeout(10.0, read=LONG_POLL_TIMEOUT + 15)
    async with httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers,
                                 timeout=timeout) as client:
        sub = HTTPSubscriber(client, channels, cursor, count, emit, notice)
        await _loop(sub, transport, interval)


async def _loop(sub: HTTPSubscriber, transport: str, interval: float) -> None:
    backoff = 0.0
    while not sub.done:
        try:
            if transport == "sse":
                await sub.sse()
            elif transport == "stream":
                await sub.stream()
            else:
                await sub.polls(LONG_POLL_TIMEOUT if transport == "longpoll" else 0, interval)
            backoff = 0.0
        except _Refused as exc:
            raise ValueError(str(exc)) from None
        except httpx.HTTPError as exc:
            if not sub.connected:
                raise OSError(f"cannot reach the server: {exc}") from None
            backoff = min(MAX_BACKOFF, max(sub.retry, backoff * 2))
            sub.notice({"op": "reconnecting", "after": backoff, "reason": str(exc)})
        if not sub.done:  # the server ended the stream, or the connection dropped
            await asyncio.sleep(backoff or sub.retry)
