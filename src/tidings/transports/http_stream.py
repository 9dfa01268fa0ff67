"""HTTP streaming (``GET /stream``): chunked ``application/x-ndjson``, one JSON object per line.

Lines: ``{"op":"ready","channels":{…},"cursor":…}`` first; then each publication as its JSON
object with a ``cursor`` field (publications carry no ``op``); ``{"op":"gap",…}`` when a resume
cannot be covered; ``{"op":"heartbeat"}`` while idle; ``{"op":"disconnect",…}`` when the server
ends the stream (reconnect with the last cursor). Made for ``curl -N``, fetch streams and backends.
"""

from __future__ import annotations

from collections.abc import Mapping

from tidings.core.disconnect import Disconnect
from tidings.core.events import Gap
from tidings.core.position import Position
from tidings.core.wire.frames import EncodedPublication
from tidings.core.wire.ndjson import ndjson_line
from tidings.transports.http_common import (
    encode,
    farewell_fields,
    gap_fields,
    ready_fields,
)

__all__ = ["NDJSONFraming"]


class NDJSONFraming:
    """NDJSON lines (see the module docstring); pure."""

    content_type = b"application/x-ndjson"
    heartbeat = b'{"op":"heartbeat"}\n'

    preamble = b""

    def ready(self, positions: Mapping[str, Position], cursor: str) -> bytes:
        return ndjson_line(encode({"op": "ready", **ready_fields(positions, cursor)}))

    def gap(self, gap: Gap, cursor: str) -> bytes:
        return ndjson_line(encode({"op": "gap", **gap_fields(gap, cursor)}))

    def publication(self, encoded: EncodedPublication, cursor: str, single: bool) -> bytes:
        if single:
            return encoded.ndjson  # shared by every single-channel stream of this channel
        return ndjson_line(encoded.with_cursor(cursor))

    def farewell(self, reason: Disconnect) -> bytes:
        return ndjson_line(encode({"op": "disconnect", **farewell_fields(reason)}))
