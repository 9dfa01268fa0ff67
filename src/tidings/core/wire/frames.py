"""Encoded publications and WebSocket reply frames.

A publication is serialised to JSON once per publish (``body``), and its cursor token once.
Each transport's bytes are derived from those on first use and cached on the
:class:`EncodedPublication`, which the hub hands to every subscriber: a thousand WebSocket
subscribers share one frame, a thousand single-channel SSE streams share one event. Compressed
WebSocket frames (permessage-deflate without server context takeover) are built the same way,
once per negotiated window (:meth:`EncodedPublication.ws_deflated`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import orjson

from tidings.core.cursor import encode_token
from tidings.core.disconnect import CloseCode, Disconnect, disconnect
from tidings.core.events import Publication
from tidings.core.fossil import create as fossil_delta
from tidings.core.wire.content_coding import deflate_segment
from tidings.core.wire.ndjson import ndjson_line

if TYPE_CHECKING:
    from tidings.core.wire.deflate import Deflate
from tidings.core.wire.sse import sse_event

__all__ = [
    "SPLICE_FROM",
    "EncodedPublication",
    "encode_json",
    "line_safe",
    "publication_json",
    "reply",
    "too_many_frames",
    "ws_text_frame",
]

# U+0085, U+2028 and U+2029 are line breaks to str.splitlines() and to httpx's
# ``Response.aiter_lines()`` (the usual way to read NDJSON in Python), though not to JSON or the
# SSE spec: orjson writes them raw inside strings, and such a reader cuts the line there.
# Escaped, the JSON means the same and every line reader sees one line
# (tests/conformance/test_sse.py and test_ndjson_lines.py).
_LINE_BREAKS = ((b"\xc2\x85", b"\\u0085"), (b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"))


def line_safe(json_bytes: bytes) -> bytes:
    """``json_bytes`` with U+0085, U+2028 and U+2029 written as ``\\u`` escapes (same JSON)."""
    if b"\xc2\x85" in json_bytes or b"\xe2\x80" in json_bytes:
        for raw, escaped in _LINE_BREAKS:
            json_bytes = json_bytes.replace(raw, escaped)
    return json_bytes


SPLICE_FROM = 256
"""Shorter data is encoded again with the rest: cheaper than splicing."""


def publication_json(publication: Publication) -> bytes:
    """:meth:`Publication.to_dict` as JSON, splicing in ``data_json`` when the publication has it
    (the same bytes: ``data`` is the last field)."""
    data_json = publication.data_json
    if data_json is None or len(data_json) < SPLICE_FROM:
        return orjson.dumps(publication.to_dict())
    head = orjson.dumps(
        {
            "channel": publication.channel,
            "offset": publication.offset,
            "epoch": publication.epoch,
            "id": publication.id,
            "time": publication.time,
            "event": publication.event,
        }
    )
    return b"".join((head[:-1], b',"data":', data_json, b"}"))


def encode_json(value: Any) -> bytes:
    """JSON bytes (UTF-8, compact; non-string dict keys are refused)."""
    return orjson.dumps(value)


def reply(op: str, ref: int | None, **fields: Any) -> str:
    """A server → client frame as text: ``{"op": op, "ref": ref, ...fields}``."""
    obj: dict[str, Any] = {"op": op}
    if ref is not None:
        obj["ref"] = ref
    obj.update(fields)
    return orjson.dumps(obj).decode()


def too_many_frames(limit: int) -> Disconnect:
    """Why a WebSocket message of more than ``limit`` frames (``limits.max_message_frames``) is
    refused, on both engines: each frame costs the server a parse and a part to join, even an
    empty one, so a message's frames are bounded as its bytes are."""
    return disconnect(CloseCode.MESSAGE_TOO_BIG, f"message in over {limit} frames")


def ws_text_frame(payload: bytes) -> bytes:
    """A complete unmasked, unfragmented WebSocket text frame (RFC 6455 5.2) of ``payload``.

    ``payload`` must be UTF-8; servers never mask, so the frame is the same for every client.
    """
    n = len(payload)
    if n < 126:
        return b"\x81" + bytes((n,)) + payload
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


_UNSET: Any = object()


class EncodedPublication:
    """A publication with its bytes for every transport, each computed at most once.

    The hub sets :attr:`previous` to the publication it fanned out just before on the channel
    (the immediately previous offset, same epoch) when the channel's namespace allows deltas, or
    compressed WebSocket frames may be chained (:mod:`tidings.core.wire.deflate`): :attr:`delta`
    (the delta as an encoded publication, with its own frames, :mod:`tidings.core.delta`) and
    the chained frame are then built once, on first use, and shared by every such subscriber.
    """

    __slots__ = (
        "__weakref__",  # connections hold the last one their client inflated weakly (deflate.py)
        "_deflated",
        "_delta",
        "_ndjson",
        "_ndjson_chained",
        "_ndjson_deflated",
        "_sse",
        "_sse_chained",
        "_sse_deflated",
        "_ws",
        "_ws_frame",
        "body",
        "previous",
        "publication",
        "token",
    )

    def __init__(self, publication: Publication, body: bytes | None = None) -> None:
        """``body``: the publication JSON, if not :func:`publication_json` (a delta's)."""
        self.publication = publication
        self.body = line_safe(publication_json(publication)) if body is None else body
        self.token = encode_token(publication.channel, publication.position)
        self._ws: str | None = None
        self._ws_frame: bytes | None = None
        self._deflated: dict[tuple[Deflate, bool], bytes] | None = None
        self._sse: bytes | None = None
        self._ndjson: bytes | None = None
        self._sse_deflated: bytes | None = None
        self._ndjson_deflated: bytes | None = None
        # (the bytes it follows, the chained segment): for the streams that sent those last
        self._sse_chained: tuple[bytes, bytes] | None = None
        self._ndjson_chained: tuple[bytes, bytes] | None = None
        self.previous: EncodedPublication | None = None
        self._delta: EncodedPublication | None = _UNSET

    def with_cursor(self, cursor: str) -> bytes:
        """The publication JSON with a ``cursor`` field (for streams over several channels)."""
        return b"".join((self.body[:-1], b',"cursor":"', cursor.encode("ascii"), b'"}'))

    @property
    def ws_text(self) -> str:
        """The WebSocket ``message`` frame, with the cursor of this publication's channel."""
        if self._ws is None:
            self._ws = self._ws_payload().decode()
        return self._ws

    def _ws_payload(self) -> bytes:
        return b"".join((b'{"op":"message",', self.body[1:-1], b',"cursor":"', self.token.encode(), b'"}'))

    @property
    def ws_frame(self) -> bytes:
        """:attr:`ws_text` as a complete WebSocket text frame (header + payload), built once."""
        if self._ws_frame is None:
            self._ws_frame = ws_text_frame(self._ws_payload())
        return self._ws_frame

    @property
    def ws_compressed(self) -> bool:
        """Whether a compressed WebSocket frame of it was asked for (:meth:`ws_deflated`)."""
        return self._deflated is not None

    def ws_deflated(self, deflate: Deflate, chained: bool = False) -> bytes:
        """:attr:`ws_frame` for a connection that negotiated ``deflate``: compressed (RSV1 set)
        or not, as ``deflate`` decides, built once per publication and outcome, shared by every
        such subscriber. ``chained``: refer to :attr:`previous` (the caller owes that its client
        inflated :attr:`previous`'s message last; see :mod:`tidings.core.wire.deflate`)."""
        cache = self._deflated
        if cache is None:
            self._deflated = cache = {}
        key = (deflate, chained)
        frame = cache.get(key)
        if frame is None:
            previous = self.previous._ws_payload() if chained and self.previous is not None else None
            data = deflate.compress(self._ws_payload(), previous)
            # uncompressed (too short, or not smaller): the plain frame, not a copy of it
            frame = cache[key] = self.ws_frame if data is None else deflate.frame_of(data)
        return frame

    @property
    def sse(self) -> bytes:
        """The SSE event for a stream of this publication's channel alone."""
        if self._sse is None:
            self._sse = sse_event(self.publication.event, self.with_cursor(self.token), self.token)
        return self._sse

    @property
    def ndjson(self) -> bytes:
        """The NDJSON line for a stream of this publication's channel alone."""
        if self._ndjson is None:
            self._ndjson = ndjson_line(self.with_cursor(self.token))
        return self._ndjson

    # delta updates -------------------------------------------------------------------------------

    @property
    def data_text(self) -> bytes:
        """``data`` as it is written in :attr:`body` (what a delta applies to, and produces).

        ``data`` is the body's last field and every field before it is a scalar, so the first
        ``,"data":`` is the key (inside a JSON string a quote is always escaped).
        """
        return self.body[self.body.index(b',"data":') + 8 : -1]

    @property
    def delta(self) -> EncodedPublication | None:
        """This publication as a delta, for delta subscribers: the same publication JSON with
        ``"delta":true`` and, as ``data``, the fossil delta from :attr:`previous`'s
        :attr:`data_text` to this one's as a JSON string; its frames for every transport are
        built once, like these. None when there is no previous publication, or the delta is not
        valid UTF-8, or it is not smaller than the data."""
        if self._delta is _UNSET:
            self._delta = None
            previous = self.previous
            if previous is not None:
                text = self.data_text
                delta = fossil_delta(previous.data_text, text)
                try:
                    as_json = line_safe(orjson.dumps(delta.decode()))
                except UnicodeDecodeError:  # a literal cut a UTF-8 sequence
                    return None
                if len(as_json) < len(text):
                    head = self.body[: self.body.index(b',"data":')]
                    body = b"".join((head, b',"delta":true,"data":', as_json, b"}"))
                    self._delta = EncodedPublication(self.publication, body)
                    # consecutive deltas share their envelope: a compressed delta frame may be
                    # chained to the previous one, as a full publication's is (DeflateSender)
                    prior = previous._delta
                    if prior is not None and prior is not _UNSET:
                        self._delta.previous = prior
        return self._delta

    def forget_previous(self) -> None:
        """Drop the link to the previous publication, and its delta's (the hub, once the fan-out
        of the next one begins): no chain of publications stays alive."""
        self.previous = None
        delta = self._delta
        if delta is not None and delta is not _UNSET:
            delta.previous = None

    def fanned_out(self) -> None:
        """Its fan-out is over and the hub keeps it as the channel's last publication (what the
        next one's delta and chained frame refer to: :attr:`body`, :attr:`token`, its delta's):
        drop what only the fan-out needed, which would otherwise stay for as long as the
        channel is idle, once per channel (a per-user channel: once per connection). That is
        the WebSocket frames, built and queued during the fan-out (both engines build them as
        they deliver), the link to the previous publication (nothing computes from this one's
        any more), and the publication's ``data`` (its JSON is in :attr:`body`), 11 KB of
        Python objects for a 1 KB ticker. The body is copied to its size: orjson's bytes keep
        the buffer it wrote into (4 KB for a 1 KB ticker). A stream's shared bytes
        (:attr:`sse`, :attr:`ndjson`) stay: a stream may take its publications after the
        fan-out."""
        self.forget_previous()
        self.body = bytes(memoryview(self.body))
        publication = self.publication
        if publication.data is not None or publication.data_json is not None:
            publication = replace(publication, data=None, data_json=None)
        for encoded in (self, self._delta):
            if encoded is not None and encoded is not _UNSET:
                encoded.publication = publication
                encoded._ws = encoded._ws_frame = encoded._deflated = None

    def deflated(self, data: bytes, level: int, after: bytes | None = None) -> bytes | None:
        """The compressed segment (:func:`~tidings.core.wire.content_coding.deflate_segment`)
        of ``data`` if ``data`` is this publication's shared :attr:`sse` event or :attr:`ndjson`
        line, made once and shared by every compressed stream that sends it; None for other
        bytes (a stream's own: the caller compresses them itself).

        ``after``: the bytes the stream sent last, if they were one whole event (the previous
        publication's shared bytes, usually). The first ``after`` asked for gets a segment
        chained to it, made once and shared by every stream that asks with the same bytes
        object; any other ``after`` gets the independent segment, so a publication costs at most
        two compressions. ``level`` is the node's one setting (``sse.compression_level``): the
        first call's is kept."""
        if data is self._sse:
            if after is not None:
                if self._sse_chained is None:
                    self._sse_chained = (after, deflate_segment(data, level, after))
                if self._sse_chained[0] is after:
                    return self._sse_chained[1]
            if self._sse_deflated is None:
                self._sse_deflated = deflate_segment(data, level)
            return self._sse_deflated
        if data is self._ndjson:
            if after is not None:
                if self._ndjson_chained is None:
                    self._ndjson_chained = (after, deflate_segment(data, level, after))
                if self._ndjson_chained[0] is after:
                    return self._ndjson_chained[1]
            if self._ndjson_deflated is None:
                self._ndjson_deflated = deflate_segment(data, level)
            return self._ndjson_deflated
        return None
