"""Polling (``GET /poll``): what both engines share around the poll machine
(:mod:`tidings.machines.poll`, where the rules live).

Answer: ``{"messages": [publication + cursor, …], "cursor": "…", "gaps": [gap, …]}``; the next
poll passes ``cursor`` back and misses nothing.

Long polling (``timeout`` > 0, capped by ``limits.max_poll_timeout``): :class:`PollFeed` is the
stream subscriber's sink of a held poll, feeding a :class:`~tidings.machines.poll.Poll` and
telling the engine when the answer is due. Short polling (``timeout=0``) never touches the hub:
:func:`serve_short_poll` reads history and answers, with an ``ETag`` derived from the answer's
cursor (``304`` when ``If-None-Match`` names it).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tidings.core.disconnect import Disconnect
from tidings.core.events import Gap, Publication
from tidings.core.position import Position
from tidings.core.wire.frames import EncodedPublication
from tidings.exceptions import TidingsError
from tidings.machines.poll import Poll, merge_by_time, poll_body, short_poll_status
from tidings.node import Node
from tidings.transports.http_common import (
    CursorTracker,
    Headers,
    Send,
    StreamRequest,
    StreamSubscriber,
    answer,
    answer_error,
    encode,
    gap_fields,
)

__all__ = ["POLL_HEADERS", "PollFeed", "leave", "new_poll", "poll_subscriber", "serve_short_poll"]

POLL_HEADERS: Headers = [(b"cache-control", b"no-cache")]


def new_poll(request: StreamRequest, now: float) -> Poll:
    """The machine of a long poll of ``request`` (``now``: the engine's loop time)."""
    return Poll(request.limit, request.timeout, now, request.credentials.expires_at, time.time())


def poll_subscriber(
    node: Node, request: StreamRequest, poll: Poll, due: Callable[[], None]
) -> StreamSubscriber:
    """The hub subscriber and node connection of a held poll: what it produces, and the node's
    disconnect, go to ``poll``; ``due`` is called once, when the answer becomes due."""
    feed = PollFeed(poll, due)
    stream = StreamSubscriber(node, request, "longpoll", feed)
    stream.on_end.append(feed.disconnect)
    return stream


def leave(stream: StreamSubscriber, poll: Poll) -> None:
    """Leave the hub and the node at once (before the answer: the machine's order), recording
    for the close log who ended the poll and why."""
    stream.gone = poll.gone
    if stream.closing is None:
        stream.closing = poll.closing
    stream.close_now()


class PollFeed:
    """The stream subscriber's sink of a held poll: what the subscription produces goes to the
    machine; ``due`` is called once, when the answer becomes due (the engine answers at the end
    of the loop iteration). ``disconnect`` is the subscriber's ``on_end`` hook."""

    __slots__ = ("due", "poll")

    def __init__(self, poll: Poll, due: Callable[[], None]) -> None:
        self.poll = poll
        self.due = due

    def ready(self, positions: dict[str, Position], cursor: str) -> None:
        self.poll.ready(cursor)

    def gap(self, gap: Gap, cursor: str) -> None:
        if self.poll.gap(encode(gap_fields(gap, cursor)), cursor):
            self.due()

    def publication(self, encoded: EncodedPublication, cursor: str, single: bool) -> None:
        if self.poll.publication(encoded, cursor, single):
            self.due()

    def disconnect(self) -> None:
        if self.poll.disconnect():
            self.due()


async def _read(
    node: Node, request: StreamRequest
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
    for pub in merge_by_time(pages, request.limit):
        encoded = EncodedPublication(pub)
        messages.append(encoded.with_cursor(tracker.advance(encoded)))
    cursor = tracker.cursor
    status, etag = short_poll_status(cursor, request.headers.get("if-none-match"))
    headers = [(b"etag", etag.encode()), *POLL_HEADERS, *request.cors]
    await answer(send, status, poll_body(messages, cursor, gap_bytes) if status == 200 else b"", headers)


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
        self.client_id = request.client_id
        self.transport = "poll"
        self.user = request.credentials.user

    def disconnect(self, reason: Disconnect) -> None:
        """Nothing to end: the answer is immediate."""
