"""``Content-Encoding: gzip`` or ``deflate`` for the HTTP streams (``/sse``, ``/stream``), sans-I/O.

A stream never ends on its own, and every event must reach the client at once, so the body is
not compressed as one piece: each event (a publication, a notice, a heartbeat) becomes a
**segment** of raw deflate blocks made by a fresh compressor and ended by a sync flush (an empty
stored block, ``00 00 ff ff``). A segment starts and ends on a byte boundary and refers to no byte
before it, so segments joined in any order are one valid deflate stream, and a decoder can hand
out everything a segment holds as soon as it has the segment: no event waits for the next.

Because a segment depends on its event's bytes alone, the segment of an event shared by every
single-channel stream of a channel (:attr:`EncodedPublication.sse
<tidings.core.wire.frames.EncodedPublication.sse>`, ``.ndjson``) is compressed **once per
publication** and shared, like the plain bytes (:meth:`EncodedPublication.deflated
<tidings.core.wire.frames.EncodedPublication.deflated>`). A segment may also be **chained** to the
event before it (compressed with that event as its dictionary): valid only for a decoder whose
last output was that event, it is what every stream that just sent the channel's previous
publication can share, and consecutive publications of a feed compress against each other as
with a compressor per connection, for the cost of one compression per publication.

What is the response's own is the wrapper (:class:`StreamCoding`): the gzip header (RFC 1952)
or zlib header (RFC 1950, what HTTP calls ``deflate``) first, and, when the server ends the
stream (its ``disconnect`` notice), a last empty block and the trailer: the CRC-32 and length
(gzip) or Adler-32 (zlib) of the bytes the client was sent. A stream the client leaves, or a
connection cut, has no trailer, as any endless compressed body: decoders hand out the data as
it comes and do not wait for one.

``docs/topics/compressed-streams.md`` measures independent and chained segments against one
compressor per connection.
"""

from __future__ import annotations

import zlib

__all__ = ["CODINGS", "StreamCoding", "accepted_coding", "deflate_segment"]

#: What the streams offer, in the server's order of preference (for equal q-values).
CODINGS = ("gzip", "deflate")

# RFC 1952: magic, CM = 8 (deflate), no flags, MTIME 0 (none), XFL 0, OS 255 (unknown)
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
# RFC 1950: CM 8 with a 32 KiB window (CINFO 7), FLEVEL 2 (default), FCHECK making it % 31 == 0
_ZLIB_HEADER = b"\x78\x9c"
# The last block: final, fixed Huffman codes, empty (what a compressor's flush(Z_FINISH) adds)
_LAST_BLOCK = b"\x03\x00"


def _qvalue(params: list[str]) -> float:
    """The ``q`` of a coding's parameters (RFC 9110 12.4.2); 1 if absent, 0 if malformed."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


def accepted_coding(accept_encoding: str | None) -> str | None:
    """The coding of :data:`CODINGS` that an ``Accept-Encoding`` value allows with the highest
    q-value (``gzip`` on a tie), or None: no header, none allowed, or only with ``q=0``.

    ``x-gzip`` is ``gzip`` (RFC 9110 8.4.1.3); ``*`` stands for every coding not named.
    """
    if not accept_encoding:
        return None
    named: dict[str, float] = {}
    star: float | None = None
    for item in accept_encoding.split(","):
        coding, *params = item.split(";")
        coding = coding.strip().lower()
        if coding == "x-gzip":
            coding = "gzip"
        q = _qvalue(params)
        if coding == "*":
            star = q
        elif coding in CODINGS:
            named[coding] = max(q, named.get(coding, 0.0))
    best: str | None = None
    best_q = 0.0
    for coding in CODINGS:
        q = named.get(coding, star if star is not None else 0.0)
        if q > best_q:
            best, best_q = coding, q
    return best


def deflate_segment(data: bytes, level: int, after: bytes | None = None) -> bytes:
    """``data`` as raw deflate blocks from a fresh compressor, ended by a sync flush (see the
    module docstring): independent of every other segment, so it can be shared and joined.

    With ``after``, the segment is **chained**: compressed with ``after`` as its dictionary, it
    may refer to ``after``'s bytes, so it is only valid right behind them: a decoder whose last
    output was exactly ``after`` (the previous segment of the stream decoded to it). Consecutive
    events of a feed differ a little, so a chained segment is several times smaller.

    ``level`` is zlib's (1 fastest … 9 smallest). The window and hash table are sized to
    what they must hold (a 1 KB event needs no 32 KiB window): a compressor's set-up costs more
    than a small event's compression, and its size does not change what a decoder needs (a
    gzip or zlib decoder keeps 32 KiB of history; a longer ``after`` is used only in part).
    """
    if after is None:
        bits = min(15, max(9, (len(data) - 1).bit_length()))
        compressor = zlib.compressobj(level, zlib.DEFLATED, -bits, max(1, bits - 6))
    else:
        bits = min(15, max(9, (len(after) + len(data) - 1).bit_length()))
        compressor = zlib.compressobj(
            level, zlib.DEFLATED, -bits, max(1, bits - 6), zlib.Z_DEFAULT_STRATEGY, after
        )
    return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)


class StreamCoding:
    """The Content-Encoding of one stream's response: its header, its segments, its trailer.

    The caller owes the order: :meth:`header` first; :meth:`segment` (or a shared segment from
    :meth:`EncodedPublication.deflated <tidings.core.wire.frames.EncodedPublication.deflated>`
    with :meth:`taken`) for every piece of plain bytes, in the order they will be written;
    :meth:`handed` when they are handed to the connection and :meth:`sent` once the connection
    has taken them; :meth:`dropped` for the pending ones that never will be handed (a slow
    consumer's), :meth:`lost` for the handed ones the connection never took (a write the end
    of the stream interrupted); :meth:`trailer` last, after everything before it was
    :meth:`sent`: it counts what was.
    """

    __slots__ = ("_check", "_gzip", "_handed", "_size", "_unsent", "level", "name")

    def __init__(self, name: str, level: int = 6) -> None:
        if name not in CODINGS:
            raise ValueError(f"unknown content coding {name!r}: use one of {', '.join(CODINGS)}")
        #: The ``Content-Encoding`` value.
        self.name = name
        #: zlib's compression level of the segments.
        self.level = level
        self._gzip = name == "gzip"
        self._check = 0 if self._gzip else 1  # CRC-32 and Adler-32 start values
        self._size = 0
        #: Plain bytes segmented and not yet handed, and handed but not yet sent: the trailer
        #: counts them only once sent.
        self._unsent: list[bytes] = []
        self._handed: list[bytes] = []

    def header(self) -> bytes:
        return _GZIP_HEADER if self._gzip else _ZLIB_HEADER

    def segment(self, data: bytes, after: bytes | None = None) -> bytes:
        """The segment of ``data``, compressed for this response alone (not shared); chained
        to ``after`` if given, which the caller owes to be the event written right before."""
        self._unsent.append(data)
        return deflate_segment(data, self.level, after)

    def taken(self, data: bytes) -> None:
        """``data`` goes out as a shared segment made elsewhere (count it like :meth:`segment`)."""
        self._unsent.append(data)

    def handed(self) -> None:
        """What was segmented so far is handed to the connection."""
        self._handed += self._unsent
        self._unsent.clear()

    def sent(self) -> None:
        """What was handed is taken by the connection: the trailer counts it."""
        check, size = self._check, self._size
        if self._gzip:
            for data in self._handed:
                check = zlib.crc32(data, check)
                size += len(data)
        else:
            for data in self._handed:
                check = zlib.adler32(data, check)
        self._check, self._size = check, size
        self._handed.clear()

    def dropped(self) -> None:
        """What was segmented and not handed never will be."""
        self._unsent.clear()

    def lost(self) -> None:
        """What was handed and not taken never will be."""
        self._handed.clear()

    def trailer(self) -> bytes:
        """The response's last bytes: the last (empty) block and the check of what was sent."""
        if self._gzip:
            return (
                _LAST_BLOCK
                + self._check.to_bytes(4, "little")
                + (self._size & 0xFFFFFFFF).to_bytes(4, "little")
            )
        return _LAST_BLOCK + self._check.to_bytes(4, "big")
