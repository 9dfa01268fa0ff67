"""The client's HTTP transports: SSE, NDJSON streaming, long polling and short polling.

Each subscription runs one loop that connects, reads, and on any drop reconnects with backoff,
resuming from the subscription's cursor. Framing is parsed with the server's own core modules
(``core.wire.sse.SSEParser``), so the two cannot drift.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from tidings.client.api import error_from_response
from tidings.client.resume import Backoff, gap_from
from tidings.core.cursor import decode_cursor
from tidings.core.position import Position
from tidings.core.wire.sse import SSEParser
from tidings.exceptions import TidingsError

if TYPE_CHECKING:
    from tidings.client.client import Client, Subscription

__all__ = ["run_http"]

# Answers after which reconnecting cannot help.
FATAL_STATUS = {400, 401, 403, 404, 413}


def _params(sub: Subscription, **extra: Any) -> httpx.QueryParams:
    params: list[tuple[str, str | int | float | bool | None]] = [("channel", sub.channel)]
    if sub.cursor:
        params.append(("cursor", sub.cursor))
    if sub.decoder is not None:  # sse and stream (polls get full publications)
        sub.decoder.reset()  # a new stream starts with a full publication
        params.append(("delta", "fossil"))
    params.extend((k, str(v)) for k, v in extra.items())
    return httpx.QueryParams(params)


async def _headers(client: Client) -> dict[str, str]:
    token = await client.fresh_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def _error(response: httpx.Response) -> TidingsError:
    return error_from_response(response)


def _dispatch(sub: Subscription, kind: str, obj: dict[str, Any], raw: bytes = b"") -> None:
    """``raw``: a publication's JSON text (a delta stream's publications need it)."""
    if kind == "ready":
        position = obj.get("channels", {}).get(sub.channel)
        if position:
            sub.at(Position(position["epoch"], position["offset"]))
    elif kind == "gap":
        sub.gap(gap_from(obj, sub.latest))
    elif kind == "publication" and obj.get("channel") == sub.channel:
        sub.message(obj, raw)


async def _sse(http: httpx.AsyncClient, client: Client, sub: Subscription) -> None:
    headers = {"Accept": "text/event-stream", **await _headers(client)}
    async with http.stream("GET", "/sse", params=_params(sub), headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
            raise _error(response)
        parser = SSEParser()
        async for chunk in _with_heartbeat(response.aiter_bytes(), client.heartbeat_timeout):
            for message in parser.feed(chunk):
                raw = message.data.encode()
                kind = message.event if message.event in ("ready", "gap", "disconnect") else "publication"
                _dispatch(sub, kind, orjson.loads(raw), raw)


async def _stream(http: httpx.AsyncClient, client: Client, sub: Subscription) -> None:
    async with http.stream("GET", "/stream", params=_params(sub), headers=await _headers(client)) as response:
        if response.status_code != 200:
            await response.aread()
            raise _error(response)
        async for line in _lines(_with_heartbeat(response.aiter_bytes(), client.heartbeat_timeout)):
            obj = orjson.loads(line)
            op = obj.get("op")
            if op in ("ready", "gap"):
                _dispatch(sub, op, obj)
            elif op is None:
                _dispatch(sub, "publication", obj, line)


async def _poll(http: httpx.AsyncClient, client: Client, sub: Subscription, timeout: float) -> None:
    etag: str | None = None
    while True:
        headers = await _headers(client)
        if etag and timeout == 0:
            headers["If-None-Match"] = etag
        response = await http.get(
            "/poll", params=_params(sub, timeout=timeout), headers=headers, timeout=timeout + 30
        )
        if response.status_code == 200:
            etag = response.headers.get("etag")
            body = response.json()
            for gap in body.get("gaps", []):
                _dispatch(sub, "gap", gap)
            for pub in body.get("messages", []):
                _dispatch(sub, "publication", pub)
            if body.get("cursor") and sub.position is None:
                found = decode_cursor(body["cursor"]).get(sub.channel)
                if found is not None:
                    sub.at(found)
        elif response.status_code != 304:
            raise _error(response)
        if timeout == 0:
            await asyncio.sleep(client.poll_interval)


async def _lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    buffer = b""
    async for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield line


async def _with_heartbeat(chunks: AsyncIterator[bytes], timeout: float) -> AsyncIterator[bytes]:
    """Chunks, or TimeoutError when the server is silent longer than heartbeats allow."""
    iterator = chunks.__aiter__()
    while True:
        try:
            yield await asyncio.wait_for(iterator.__anext__(), timeout)
        except StopAsyncIteration:
            return


async def run_http(client: Client, sub: Subscription) -> None:
    """The loop of one subscription over ``client.transport``; ends when cancelled."""
    backoff = Backoff(*client.backoff)
    async with httpx.AsyncClient(base_url=client.base_url, timeout=httpx.Timeout(30, read=None)) as http:
        while True:
            try:
                if client.transport == "sse":
                    await _sse(http, client, sub)
                elif client.transport == "stream":
                    await _stream(http, client, sub)
                else:
                    timeout = client.long_poll_timeout if client.transport == "longpoll" else 0
                    await _poll(http, client, sub, timeout)
                backoff.reset()  # the server ended the stream: come back at once
                continue
            except TidingsError as exc:
                if exc.http_status in FATAL_STATUS:
                    sub.fail(exc)
                    return
            except (TimeoutError, httpx.HTTPError, OSError, ValueError):
                pass
            await asyncio.sleep(backoff.next_delay())
