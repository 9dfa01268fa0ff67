"""permessage-deflate (RFC 7692), server side, sans-I/O: the negotiation and the codec.

Theory. A compressor that keeps its context from one message to the next makes each compressed
message depend on every message before it on that connection: fan-out would compress each
publication once per subscriber, and every connection would hold a deflate state (a window of
up to 32 KiB and 256 KiB of hash tables at zlib's defaults). tidings keeps no compressor per
connection. A compressed message is either *independent* (it depends only on its own bytes) or
*chained*: compressed with the channel's previous publication as its dictionary, so that it may
refer back to those bytes, which is valid for a client whose inflater's last output was exactly
that publication (RFC 7692 7.1.1.1: without ``server_no_context_takeover`` the client keeps its
window from message to message). Both are built once per publication and shared
(:meth:`Deflate.compress`, cached by :class:`~tidings.core.wire.frames.EncodedPublication`);
what a connection keeps is which publication its client inflated last (a reference). The
consecutive messages of a feed repeat most of their bytes, so chaining sends what a compressor
per connection would, at the cost of one more compression per publication. A client that asks
for ``server_no_context_takeover`` gets independent messages only (:attr:`Deflate.chained`).

The answer also carries ``client_no_context_takeover`` (RFC 7692 7.1.1.1: a server may ask it
of any client that offers the extension; browsers, Node ``ws`` and Python ``websockets`` all
honour it), so reading a client's compressed message needs an inflate state only while that
message is read (:class:`Inflater`): an idle connection holds none. The inflater decodes any
window (15 bits decodes every smaller one), and bounds what it produces: a message that would
inflate past ``max_size`` is refused (1009) after at most ``max_size`` + 1 bytes were produced,
so a decompression bomb costs no more than an honest message of the limit.

Negotiation (RFC 7692 5 and 7.1): the client's ``Sec-WebSocket-Extensions`` may hold several
offers, in its order of preference; the first ``permessage-deflate`` offer whose parameters are
valid is accepted, the others declined. An offer is declined when a parameter is unknown,
repeated, or has a bad value. ``server_max_window_bits`` asked by the client is honoured (and
echoed): at 9 to 15 bits the server compresses with that window; at 8, which zlib cannot
produce, it accepts and sends every message uncompressed, as RFC 7692 allows any message to be.
Messages shorter than ``threshold`` bytes, and those deflate would not make smaller, go
uncompressed too.
"""

from __future__ import annotations

import weakref
import zlib
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tidings.core.wire.frames import EncodedPublication

__all__ = [
    "EXTENSION",
    "Deflate",
    "DeflateSender",
    "InflateError",
    "Inflater",
    "deflate_frame_header",
    "extension_headers",
    "negotiate",
    "parse_offers",
]

EXTENSION = "permessage-deflate"
_TAIL = b"\x00\x00\xff\xff"  # the end of a sync flush: stripped by the sender, appended to read
_BITS = {str(bits): bits for bits in range(8, 16)}  # RFC 7692 7.1.2.1: 8-15, no leading zero
_NAMES = frozenset(
    (
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
    )
)
_NO_VALUE = frozenset(("server_no_context_takeover", "client_no_context_takeover"))
_LEVEL = 6  # zlib's default: a publication is compressed once, whatever its subscribers
_MEM_LEVEL = 8


class Deflate:
    """A negotiated permessage-deflate: the window the server compresses with (``bits``), the
    smallest message compressed (``threshold``) and the ``Sec-WebSocket-Extensions`` answer.

    Instances are shared (:func:`negotiate` makes one per outcome), so a connection holds a
    reference, and they are the key of a publication's cached compressed frame.
    """

    __slots__ = ("bits", "chained", "params", "response", "threshold")

    def __init__(
        self, bits: int, threshold: int, params: tuple[tuple[str, str | None], ...], chained: bool = False
    ) -> None:
        self.bits = bits
        self.threshold = threshold
        #: The client keeps its window between messages: a message may refer to the last one.
        self.chained = chained
        #: The answer's parameters, (name, value or None), in order.
        self.params = params
        self.response = "; ".join([EXTENSION, *(n if v is None else f"{n}={v}" for n, v in params)])

    def __repr__(self) -> str:
        return f"Deflate(bits={self.bits}, threshold={self.threshold})"

    def compress(self, payload: bytes, previous: bytes | None = None) -> bytes | None:
        """``payload`` compressed as one message (RFC 7692 7.2.1), or None when it is to go
        uncompressed (shorter than the threshold, not made smaller, or an 8-bit window).

        ``previous``: chain to it (the caller owes that the client's last inflated message was
        exactly ``previous``, and that :attr:`chained` is true)."""
        if len(payload) < self.threshold or self.bits < 9:
            return None
        # a window wider than the message (and what it refers to) buys nothing, and what zlib
        # allocates and clears for each message (its window and hash table) grows with the
        # window: 1 KB compresses to the same bytes in a 1 KiB window, several times faster
        # than in 32 KiB
        bits = min(self.bits, max(9, (len(payload) + len(previous or b"")).bit_length()))
        level = max(1, min(_MEM_LEVEL, bits - 7))
        if previous:
            z = zlib.compressobj(_LEVEL, zlib.DEFLATED, -bits, level, zdict=previous)
        else:
            z = zlib.compressobj(_LEVEL, zlib.DEFLATED, -bits, level)
        data = z.compress(payload) + z.flush(zlib.Z_SYNC_FLUSH)
        # a sync flush ends with an empty stored block, 00 00 ff ff: the receiver adds it back
        data = data[:-4]
        return data if len(data) < len(payload) else None

    def frame(self, payload: bytes, opcode: int = 0x1) -> bytes:
        """A complete unmasked final frame of ``payload`` (text by default): compressed, with
        RSV1 set, when :meth:`compress` says so; else plain."""
        data = self.compress(payload)
        if data is None:
            return deflate_frame_header(opcode, len(payload), False) + payload
        return self.frame_of(data, opcode)

    @staticmethod
    def frame_of(data: bytes, opcode: int = 0x1) -> bytes:
        """The frame of a message compressed by :meth:`compress` (RSV1 set)."""
        return deflate_frame_header(opcode, len(data), True) + data


class DeflateSender:
    """What one connection that negotiated ``deflate`` sends: publications' shared frames,
    chained when its client's window allows it, and its own messages compressed each alone.

    It keeps which publication the client inflated last, no compressor: the next publication of
    that channel may refer to it. A message sent uncompressed leaves the client's window as it
    was; any other compressed message ends the chain.

    That publication is held by a weak reference, the one CPython shares between every holder
    of a weak reference to it: a strong one would keep, for as long as the connection stays
    idle, a publication the hub has let go (with its frames, one per window) after an
    unsubscribe, per connection. A publication that died can be no live publication's
    ``previous``, so losing it loses no chained frame.
    """

    __slots__ = ("_inflated", "deflate")

    def __init__(self, deflate: Deflate) -> None:
        self.deflate = deflate
        self._inflated: weakref.ref[EncodedPublication] | None = None

    def publication(self, encoded: EncodedPublication) -> bytes:
        """``encoded``'s frame for this client (the caller sends it next, in order)."""
        inflated = self._inflated
        previous = encoded.previous
        chained = (
            self.deflate.chained and inflated is not None and previous is not None and inflated() is previous
        )
        frame = encoded.ws_deflated(self.deflate, chained)
        if frame[0] & _RSV1:
            self._inflated = weakref.ref(encoded)  # the shared one: no allocation per connection
        return frame

    def message(self, payload: bytes, opcode: int = 0x1) -> bytes:
        """A frame of this connection's own (a reply), compressed alone if worth it."""
        frame = self.deflate.frame(payload, opcode)
        if frame[0] & _RSV1:
            self._inflated = None
        return frame


_RSV1 = 0x40


def deflate_frame_header(opcode: int, length: int, compressed: bool) -> bytes:
    """The header of an unmasked final frame of ``length`` bytes; ``compressed`` sets RSV1."""
    first = (0xC0 if compressed else 0x80) | opcode
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return bytes((first, 126)) + length.to_bytes(2, "big")
    return bytes((first, 127)) + length.to_bytes(8, "big")


def parse_offers(header: str) -> list[dict[str, str | None] | None]:
    """The ``permessage-deflate`` offers of a ``Sec-WebSocket-Extensions`` value, in order:
    each its parameters (name → value, None for a parameter without one), or None for an offer
    that must be declined (a parameter unknown, repeated, or with a bad value). Other
    extensions are skipped."""
    offers: list[dict[str, str | None] | None] = []
    for item in header.split(","):
        name, *raw = (part.strip() for part in item.split(";"))
        if name.lower() != EXTENSION:
            continue
        params: dict[str, str | None] = {}
        for param in raw:
            key, sep, value = (s.strip() for s in param.partition("="))
            key = key.lower()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]  # RFC 7692 7.1: a value may be a quoted string
            if key in params or not _valid(key, sep, value):
                offers.append(None)
                break
            params[key] = value if sep else None
        else:
            offers.append(params)
    return offers


def _valid(key: str, sep: str, value: str) -> bool:
    if key in _NO_VALUE:
        return not sep
    if key == "server_max_window_bits":
        return bool(sep) and value in _BITS
    # client_max_window_bits: a hint (no value) that the client can limit its window
    return key == "client_max_window_bits" and (not sep or value in _BITS)


@lru_cache(maxsize=64)
def _outcome(bits: int, asked: bool, threshold: int, chained: bool) -> Deflate:
    params: tuple[tuple[str, str | None], ...] = () if chained else (("server_no_context_takeover", None),)
    params += (("client_no_context_takeover", None),)
    if asked:
        params += (("server_max_window_bits", str(bits)),)
    return Deflate(bits, threshold, params, chained)


def negotiate(header: str | None, threshold: int) -> Deflate | None:
    """The outcome of the client's ``Sec-WebSocket-Extensions`` (None: not offered, or every
    offer declined): send :attr:`Deflate.response` as the answer's ``Sec-WebSocket-Extensions``.
    The server keeps its context (chained messages) unless the offer asks it not to."""
    if not header:
        return None
    for params in parse_offers(header):
        if params is None:
            continue
        asked = params.get("server_max_window_bits")
        bits = 15 if asked is None else _BITS[asked]
        return _outcome(bits, asked is not None, threshold, "server_no_context_takeover" not in params)
    return None


def extension_headers(deflate: Deflate | None) -> list[tuple[str, str]]:
    """The handshake answer's header for ``deflate`` (none if not negotiated)."""
    return [] if deflate is None else [("Sec-WebSocket-Extensions", deflate.response)]


class InflateError(Exception):
    """A compressed message cannot be read: close with ``code`` (1009: too big, 1002: corrupt)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Inflater:
    """One compressed client message being read: :meth:`feed` each frame's payload in order;
    the output of all of them together is at most ``max_size`` bytes."""

    __slots__ = ("_left", "_z")

    def __init__(self, max_size: int) -> None:
        self._z = zlib.decompressobj(-15)
        self._left = max_size

    def feed(self, data: bytes, fin: bool) -> bytes:
        """The bytes ``data`` inflates to (all of the message's rest when ``fin``); raises
        :class:`InflateError`."""
        out = self._inflate(data)
        if fin:
            out += self._inflate(_TAIL)
        return out

    def _inflate(self, data: bytes) -> bytes:
        left = self._left
        try:
            # one byte more than allowed: producing it proves the message too big, and zlib
            # stops there, the rest of the input left unread
            out = self._z.decompress(data, left + 1)
        except zlib.error:
            raise InflateError(1002, "invalid compressed data") from None
        if len(out) > left:
            raise InflateError(1009, "message too big once inflated")
        self._left = left - len(out)
        return out
