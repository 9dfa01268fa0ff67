"""Delta updates: which publications a delta subscriber gets as a delta, and the refusals.

A subscription asks for deltas (``"delta": "fossil"`` on WebSocket, ``delta=fossil`` on ``/sse``
and ``/stream``) in a namespace whose ``delta`` option is on. The delta itself is computed once
per publication (:attr:`~tidings.core.wire.frames.EncodedPublication.delta`, from the
previous publication the hub fanned out on the channel); this module holds the per-connection
rule that decides, for each delivery, whether that subscriber may get it
(:class:`DeltaSubscriptions`): only when the last publication it was *delivered live* on the
channel is the immediately previous offset of the same epoch. So the first publication after a
subscribe, after a gap, and after a replay (recovered publications are sent in full; so is the
first live one after them) goes in full; then deltas follow as long as offsets are consecutive.

The client's side is :class:`DeltaDecoder` (the Python client's; tidings.js has the same rule).
"""

from __future__ import annotations

from typing import Any

import orjson

from tidings.core.fossil import DeltaError
from tidings.core.fossil import apply as apply_delta
from tidings.core.permissions import NamespaceOptions
from tidings.core.wire.frames import EncodedPublication
from tidings.exceptions import BadRequest, Forbidden

__all__ = [
    "DELTA_KINDS",
    "DeltaDecoder",
    "DeltaError",
    "DeltaSubscriptions",
    "check_delta",
    "data_text",
    "parse_delta",
]

DELTA_KINDS = ("fossil",)


def parse_delta(value: Any) -> str | None:
    """The delta kind a subscription asks for (None: none); :class:`BadRequest` if unknown."""
    if value is None:
        return None
    if value not in DELTA_KINDS:
        kinds = ", ".join(repr(k) for k in DELTA_KINDS)
        raise BadRequest(f"unknown delta kind {value!r} (known: {kinds})")
    return str(value)


def check_delta(channel: str, options: NamespaceOptions) -> None:
    """:class:`Forbidden` unless ``channel``'s namespace allows delta updates."""
    if not options.delta:
        raise Forbidden(f"delta updates are not enabled on {channel} (namespace option delta)")


class DeltaSubscriptions:
    """One connection's delta subscriptions and, per channel, the position last delivered live."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: dict[str, tuple[str, int] | None] = {}

    def add(self, channel: str) -> None:
        """Start (or start over) ``channel``: its next publication goes in full."""
        self._last[channel] = None

    def discard(self, channel: str) -> None:
        self._last.pop(channel, None)

    def __contains__(self, channel: str) -> bool:
        return channel in self._last

    def __bool__(self) -> bool:
        return bool(self._last)

    def restart(self, channel: str) -> None:
        """A replayed publication or a gap on ``channel``: the next live one goes in full."""
        if channel in self._last:
            self._last[channel] = None

    def outgoing(self, encoded: EncodedPublication) -> EncodedPublication:
        """What to send of ``encoded``, delivered live now: its delta or itself."""
        publication = encoded.publication
        channel = publication.channel
        if channel not in self._last:
            return encoded
        last = self._last[channel]
        self._last[channel] = (publication.epoch, publication.offset)
        if last is None or last[1] != publication.offset - 1 or last[0] != publication.epoch:
            return encoded
        return encoded.delta or encoded


# the client's side ----------------------------------------------------------------------------


def data_text(message: bytes) -> bytes:
    """The JSON text of ``data`` in a publication message as received (a WebSocket ``message``
    frame, an SSE event's data, an NDJSON line): what the next delta applies to.

    Every field before ``data`` is a scalar, so the first ``,"data":`` is its key (inside a JSON
    string a quote is always escaped); at most a ``cursor`` field follows it.
    """
    start = message.index(b',"data":') + 8
    end = message.rfind(b',"cursor":"')
    return message[start : end if end > start else message.rindex(b"}")]


class DeltaDecoder:
    """One subscription's side of delta updates: the data text of the last publication it
    received, which the next delta applies to."""

    __slots__ = ("_base", "applied")

    def __init__(self) -> None:
        self._base: bytes | None = None
        #: How many deltas were applied (for tests and curious applications).
        self.applied = 0

    def reset(self) -> None:
        """A new connection or a gap: the server starts over with a full publication."""
        self._base = None

    def decode(self, message: dict[str, Any], raw: bytes) -> dict[str, Any]:
        """``message`` (parsed from ``raw``) with its delta applied (no ``delta`` field, ``data``
        the publication's data); :class:`~tidings.core.fossil.DeltaError` if the delta does not
        apply (then reconnect: a new subscription starts with a full publication)."""
        if message.get("delta") is not True:
            self._base = data_text(raw)
            return message
        data = message["data"]
        if self._base is None or not isinstance(data, str):
            raise DeltaError("a delta without the publication it applies to")
        text = apply_delta(self._base, data.encode())
        self._base = text
        self.applied += 1
        decoded = dict(message)
        del decoded["delta"]
        decoded["data"] = orjson.loads(text)
        return decoded
