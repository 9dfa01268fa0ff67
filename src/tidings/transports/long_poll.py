"""Polling (``GET /poll``): long polling, and short polling as its ``timeout=0`` case.

Answer: ``{"messages": [publication + cursor, …], "cursor": "…", "gaps": [gap, …]}``; the next
poll passes ``cursor`` back and misses nothing.

Long polling (``timeout`` > 0, capped by ``limits.max_poll_timeout``) subscribes like a stream
and answers as soon as there is news (a batch of up to ``limit`` messages, or a gap), else with
an empty list at the timeout. Without a cursor it waits for the next publication. While held it
watches ``http.disconnect`` and leaves the hub at once when the client goes away.

Short polling (``timeout=0``) never touches the hub: it reads history and answers. Its ``ETag``
is derived from the answer's cursor, which for a given URL names exactly one answer (the messages
are those between the requested and the returned cursor), so ``If-None-Match`` with the last
``ETag`` gets ``304`` and an empty body when nothing is new.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping

from tidings.core.disconnect import Disconnect
from tidings.core.events import Gap, Publication
from tidings.core.position import Position
from tidings.core.wire.frames import EncodedPublication
from tidings.exceptions import TidingsError
from tidings.ids import random_id
from tidings.node import Node
from tidings.transports.http_common import (
    CursorTracker,
    Headers,
    Send,
    StreamRequest,
    answer,
    answer_error,
    encode,
    gap_fields,
)

__all__ = ["POLL_HEADERS", "PollSink", "etag_of", "poll_body",
           "serve_short_poll"]

POLL_HEADERS: Headers = [(b"cache-control", b"no-cache")]


def poll_body(messages: list[bytes], cursor: str, gaps: list[bytes]) -> bytes:
    """The answer's JSON, spliced from already-encoded messages (no re-encoding)."""
    return b"".join((b'{"messages":[', b",".join(messages), b'],"cursor":', encode(cursor),
                     b',"gaps":[', b",".join(gaps), b"]}"))


def etag_of(cursor: str) -> str:
    return '"' + hashlib.blake2b(cursor.encode(), digest_size=12).hexdigest() + '"'


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    tags = (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))
    return etag in tags


class PollSink:
    """Collects one poll's answer: up to ``limit`` messages, the gaps, the cursor after them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.messages: list[bytes] = []
        self.gaps: list[bytes] = []
        self.cursor = ""
        self.news = asyncio.get_running_loop().create_future()
        #: Also called (once, soon after) when ``news`` is set: for a poll held by a callback
        #: rather than by a task awaiting ``news``.
        self.on_news: Callable[[], None] | None = None

    def wake(self) -> None:
        if self.news.done():
            return
        self.news.set_result(None)
        if self.on_news is not None:
            # soon, not now: publications of this loop iteration still join the answer, and
            # the caller (a fan-out) is not re-entered
            asyncio.get_running_loop().call_soon(self.on_news)

    def ready(self, positions: dict[str, Position], cursor: str) -> None:
        self.cursor = cursor

    def gap(self, gap: Gap, cursor: str) -> None:
        self.gaps.append(encode(gap_fields(gap, cursor)))
        self.cursor = cursor
        self.wake()

    def publication(self, encoded: EncodedPublication, cursor: str, single: bool) -> None:
        if len(self.messages) >= self.limit:
            return  # the cursor stays after the last message sent; the next poll reads the rest
        # On one channel, the NDJSON line minus its newline is the message: shared bytes.
        self.messages.append(encoded.ndjson[:-1] if single else encoded.with_cursor(cursor))
        self.cursor = cursor
        self.wake()

    def body(self) -> bytes:
        return poll_body(self.messages, self.cursor, self.gaps)


def _merge_by_time(pages: Mapping[str, list[Publication]], limit: int) -> list[Publication]:
    """Up to ``limit`` publications, oldest first across channels, each channel in order."""
    heads = {ch: 0 for ch, pubs in pages.items() if pubs}
    merged: list[Publication] = []
    while heads and len(merged) < limit:
        channel = min(heads, key=lambda ch: (pages[ch][heads[ch]].time, ch))
        merged.append(pages[channel][heads[channel]])
        heads[channel] += 1
        if heads[channel] == len(pages[channel]):
            del heads[channel]
    return merged


async def _read(node: Node, request: StreamRequest
                ) -> tuple[dict[str, Position], dict[str, list[Publication]], list[Gap]]:
    """Each channel's current position (no cursor) or what follows its cursor."""
    starts: dict[str, Position] = {}
    pages: dict[str, list[Publication]] = {}
    gaps: list[Gap] = []
    for channel in request.channels:
        since = request.since.get(channel)
        if since is None:
            starts[channel] = await node.broker.position(channel)
            continue
        pubs, position, gap = await node.history(channel, since, request.limit)
        if gap is not None:
            gaps.append(gap)
        pages[channel] = pubs
        starts[channel] = since if gap is None else position
        if pubs:
            starts[channel] = Position(pubs[0].epoch, pubs[0].offset - 1)
    return starts, pages, gaps


async def short_poll(node: Node, request: StreamRequest, send: Send) -> None:
    try:
        starts, pages, gaps = await _read(node, request)
    except TidingsError as exc:
        await answer_error(send, exc, request.cors)
        return
    tracker = CursorTracker(starts)
    gap_bytes = [encode(gap_fields(gap, tracker.cursor)) for gap in gaps]
    messages = []
    for pub in _merge_by_time(pages, request.limit):
        encoded = EncodedPublication(pub)
        messages.append(encoded.with_cursor(tracker.advance(encoded)))
    cursor = tracker.cursor
    etag = etag_of(cursor)
    headers = [(b"etag", etag.encode()), *POLL_HEADERS, *request.cors]
    if _etag_matches(request.headers.get("if-none-match"), etag):
        await answer(send, 304, b"", headers)
        return
    await answer(send, 200, poll_body(messages, cursor, gap_bytes), headers)


async def serve_short_poll(node: Node, request: StreamRequest, send: Send) -> None:
    """Answer a short poll (``timeout=0``): what history holds, at once."""
    connection = _ShortPoll(request)
    node.register(connection)
    try:
        await short_poll(node, request, send)
    finally:
        node.unregister(connection)


class _ShortPoll:
    """A short poll as the node's connection while it is being answered."""

    def __init__(self, request: StreamRequest) -> None:
        self.client_id = random_id()
        self.transport = "poll"
        self.user = request.credentials.user

    def disconnect(self, reason: Disconnect) -> None:
        """Nothing to end: the answer is immediate."""
