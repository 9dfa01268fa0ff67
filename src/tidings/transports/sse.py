"""Server-Sent Events (``GET /sse``): a ``text/event-stream`` any EventSource can read.

The stream opens with an ``event: ready`` whose ``id:`` is the stream's starting cursor and whose
block starts with ``retry:`` (settings ``sse.retry_ms``; one block, so the first event a client
sees carries data), so a reconnect before any publication resumes from there instead
of replaying. Each publication is ``id: <cursor>`` / ``event: <publication event>`` /
``data: <publication JSON with its cursor>``; an EventSource sends the last id back as
``Last-Event-ID`` when it reconnects, which this endpoint merges with any ``cursor`` parameter.
Heartbeats are comments. Notices use the reserved event names ``ready``, ``gap`` and
``disconnect``; a publication whose own event has one of those names is sent as ``message`` (its
JSON still says which), so no publisher can forge a notice.
"""

from __future__ import annotations

from collections.abc import Mapping

from tidings.core.disconnect import Disconnect
from tidings.core.events import Gap
from tidings.core.position import Position
from tidings.core.wire.frames import EncodedPublication
from tidings.core.wire.sse import sse_comment, sse_event, sse_retry
from tidings.transports.http_common import (
    encode,
    farewell_fields,
    gap_fields,
    ready_fields,
)

__all__ = ["RESERVED_EVENTS", "SSEFraming"]

RESERVED_EVENTS = frozenset({"ready", "gap", "disconnect"})


class SSEFraming:
    """Event-stream bytes (see the module docstring); pure, of plain numbers."""

    content_type = b"text/event-stream"
    heartbeat = sse_comment("heartbeat")

    def __init__(self, retry_ms: int) -> None:
        #: The ``retry:`` field (``sse.retry_ms``) that opens the ready notice's block.
        self.preamble = sse_retry(retry_ms)

    def ready(self, positions: Mapping[str, Position], cursor: str) -> bytes:
        return sse_event("ready", encode(ready_fields(positions, cursor)), cursor)

    def gap(self, gap: Gap, cursor: str) -> bytes:
        return sse_event("gap", encode(gap_fields(gap, cursor)), cursor)

    def publication(self, encoded: EncodedPublication, cursor: str, single: bool) -> bytes:
        event = encoded.publication.event
        if event in RESERVED_EVENTS:
            return sse_event("message", encoded.with_cursor(cursor), cursor)
        if single:
            return encoded.sse  # shared by every single-channel stream of this channel
        return sse_event(event, encoded.with_cursor(cursor), cursor)

    def farewell(self, reason: Disconnect) -> bytes:
        return sse_event("disconnect", encode(farewell_fields(reason)))
