"""RFC 6455 server side, sans-I/O: the opening handshake, client-frame parsing, server frames.

Theory. A server never masks, so a data frame it sends is the same bytes for every client: fan-out
writes the frame that :class:`~tidings.core.wire.frames.EncodedPublication` built once
(``ws_frame``). Only what the *client* sends needs per-connection work: :class:`FrameParser` is fed
the bytes a socket received and returns events in order (messages, pings, pongs, a close). A
violation of the protocol is an event too (:class:`ProtocolError`, carrying the close code to
answer with), placed after the events that preceded it on the wire, after which the parser refuses
further input. The rules checked, each with its close code:

- a client frame must be masked; reserved bits must be 0 (RSV1 may be 1 on the first frame of a
  message once permessage-deflate is negotiated: ``inflate``); opcodes 3-7 and 11-15 are
  reserved (1002);
- control frames are at most 125 bytes and never fragmented (1002);
- a continuation needs a message in progress, a new message needs none in progress (1002);
- a message larger than ``max_size`` (all its fragments together) is refused as soon as its
  header says so, before its payload is buffered (1009); so is a message in more than
  ``max_frames`` frames, at the first frame too many (1009);
- text must be UTF-8, checked per fragment with an incremental decoder, so a bad fragment is
  refused before the message ends (1007);
- a compressed message (RFC 7692) is inflated frame by frame as it arrives
  (:class:`~tidings.core.wire.deflate.Inflater`): ``max_size`` bounds what it inflates to
  (1009 as soon as it would exceed it), invalid compressed data is refused (1002), and the
  inflate state lives only while the message is read;
- a close frame's code must be one a peer may send, its reason UTF-8 (1002 / 1007).

Nothing here does I/O, reads a clock, or knows about tidings' commands.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tidings.core.wire.deflate import InflateError, Inflater
from tidings.core.wire.frames import too_many_frames

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "BinaryMessage",
    "CloseReceived",
    "Event",
    "FrameParser",
    "HandshakeError",
    "Ping",
    "Pong",
    "ProtocolError",
    "TextMessage",
    "Unmask",
    "accept_key",
    "check_handshake",
    "close_frame",
    "encode_frame",
    "handshake_response",
    "parse_close",
    "unmask",
    "valid_close_code",
]

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
_DATA_OPS = (OP_CONT, OP_TEXT, OP_BINARY)
_CONTROL_OPS = (OP_CLOSE, OP_PING, OP_PONG)


# Handshake ------------------------------------------------------------------------------------


class HandshakeError(Exception):
    """The upgrade request is not a valid WebSocket opening handshake: answer ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + GUID).digest()).decode("ascii")


def _tokens(value: str | None) -> set[str]:
    return {t.strip().lower() for t in value.split(",")} if value else set()


def check_handshake(method: str, headers: Mapping[str, str]) -> str:
    """Validate an opening handshake (``headers`` keyed lower case); returns the accept key.

    Raises :class:`HandshakeError` with 400 for a malformed request, 426 for another version.
    """
    if method != "GET":
        raise HandshakeError(400, "a WebSocket handshake is a GET request")
    if "websocket" not in _tokens(headers.get("upgrade")):
        raise HandshakeError(400, "missing 'Upgrade: websocket'")
    if "upgrade" not in _tokens(headers.get("connection")):
        raise HandshakeError(400, "missing 'Connection: Upgrade'")
    if headers.get("sec-websocket-version", "").strip() != "13":
        raise HandshakeError(426, "only WebSocket version 13 is supported")
    key = headers.get("sec-websocket-key", "").strip()
    try:
        raw = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raw = b""
    if len(raw) != 16:
        raise HandshakeError(400, "invalid Sec-WebSocket-Key")
    return accept_key(key)


def handshake_response(accept: str, headers: list[tuple[str, str]] | None = None) -> bytes:
    """The ``101 Switching Protocols`` response (no subprotocol, no extension); ``headers``
    are extra response headers (ASCII, already checked)."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers or ())
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n{extra}\r\n"
    ).encode("ascii")


# Server frames --------------------------------------------------------------------------------


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked final frame (servers never mask)."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return bytes((first, 126)) + n.to_bytes(2, "big") + payload
    return bytes((first, 127)) + n.to_bytes(8, "big") + payload


def valid_close_code(code: int) -> bool:
    """May a peer send ``code`` in a close frame? (1004-1006 and 1015 are reserved.)"""
    return code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1014 or 3000 <= code <= 4999


def close_frame(code: int | None, reason: str = "") -> bytes:
    """A close frame; ``None`` makes an empty one (no code). The reason is cut to fit 125 bytes."""
    if code is None:
        return b"\x88\x00"
    raw = reason.encode()[:123]
    while raw:  # do not cut a character in half
        try:
            raw.decode()
            break
        except UnicodeDecodeError:
            raw = raw[:-1]
    return encode_frame(OP_CLOSE, code.to_bytes(2, "big") + raw)


# Client frames --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TextMessage:
    text: str


@dataclass(frozen=True, slots=True)
class BinaryMessage:
    data: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    payload: bytes


@dataclass(frozen=True, slots=True)
class CloseReceived:
    """The client's close frame; ``code`` is None for an empty one."""

    code: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """The client broke the protocol: close with ``code``; the parser takes no more input."""

    code: int
    reason: str


Event = TextMessage | BinaryMessage | Ping | Pong | CloseReceived | ProtocolError


def parse_close(payload: bytes) -> CloseReceived | ProtocolError:
    """Read a close frame's payload (RFC 6455 5.5.1)."""
    if not payload:
        return CloseReceived(None, "")
    if len(payload) == 1:
        return ProtocolError(1002, "close frame payload of 1 byte")
    code = int.from_bytes(payload[:2], "big")
    if not valid_close_code(code):
        return ProtocolError(1002, f"invalid close code {code}")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        return ProtocolError(1007, "close reason is not UTF-8")
    return CloseReceived(code, reason)


Unmask = Callable[[bytes | bytearray, bytes | bytearray], bytes]


def unmask(data: bytes | bytearray, mask: bytes | bytearray) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` (RFC 6455 5.3), in pure Python; an engine passes
    :class:`FrameParser` a C implementation where it has one (``websockets.speedups``)."""
    n = len(data)
    key = int.from_bytes((bytes(mask) * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(data, "big") ^ key).to_bytes(n, "big")


class FrameParser:
    """Feed it what a socket received; it returns the client's events in order.

    ``max_size`` bounds a whole message (all fragments; a compressed one once inflated).
    ``inflate``: permessage-deflate was negotiated, so a message may come compressed. Lean when
    idle: the buffer, the fragment state and the inflater exist only while a frame or a
    fragmented message is incomplete.
    """

    __slots__ = (
        "_buf",
        "_decoder",
        "_failed",
        "_frag_op",
        "_frames",
        "_inflate",
        "_inflater",
        "_parts",
        "_size",
        "_unmask",
        "max_frames",
        "max_size",
    )

    def __init__(
        self, max_size: int, max_frames: int | None = None, unmask: Unmask = unmask, inflate: bool = False
    ) -> None:
        self._unmask = unmask
        self._inflate = inflate
        self._inflater: Inflater | None = None
        self.max_size = max_size
        self.max_frames = max_frames
        self._frames = 0  # frames of the fragmented message in progress
        self._buf: bytearray | None = None
        self._frag_op = 0  # opcode of the fragmented message in progress, 0: none
        self._parts: list[str] | list[bytes] | None = None
        self._size = 0
        self._decoder: codecs.IncrementalDecoder | None = None
        self._failed = False

    def feed(self, data: bytes) -> list[Event]:
        if self._failed:
            return []
        if self._buf:
            self._buf += data
            buf: bytes | bytearray = self._buf
        else:
            buf = data
        events: list[Event] = []
        pos = self._parse(buf, events)
        held = self._buf
        if self._failed or pos == len(buf):
            self._buf = None
        elif buf is held:
            # in place: a bytearray drops its head without copying the rest, so a frame that
            # trickles in a byte at a time costs no more than one that arrives whole
            del held[:pos]
        else:
            self._buf = bytearray(buf[pos:])
        return events

    def _fail(self, events: list[Event], code: int, reason: str) -> int:
        events.append(ProtocolError(code, reason))
        self._failed = True
        self._parts = self._decoder = self._inflater = None
        return 0

    def _parse(self, buf: bytes | bytearray, events: list[Event]) -> int:
        pos, end = 0, len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            opcode, fin, length, head = b0 & 0x0F, b0 & 0x80, b1 & 0x7F, 2
            compressed = self._inflater is not None and opcode == OP_CONT
            if b0 & 0x70:
                # RSV1: the first frame of a compressed message (RFC 7692 6), once negotiated
                if b0 & 0x70 != 0x40 or not self._inflate or opcode not in (OP_TEXT, OP_BINARY):
                    return self._fail(events, 1002, "reserved bits set")
                compressed = True
            if not b1 & 0x80:
                return self._fail(events, 1002, "client frames must be masked")
            if opcode not in _DATA_OPS and opcode not in _CONTROL_OPS:
                return self._fail(events, 1002, f"reserved opcode {opcode}")
            if length == 126:
                if end - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if opcode >= OP_CLOSE:
                if not fin or length > 125:
                    return self._fail(events, 1002, "control frames are short and unfragmented")
            elif compressed:
                # what a frame inflates to is bounded by the inflater; its own bytes by the
                # limit plus what deflate adds to data it cannot shrink (5 bytes per 16 KiB)
                if length > self.max_size + (self.max_size >> 10) + 64:
                    return self._fail(events, 1009, f"message over {self.max_size} bytes")
            elif self._size + length > self.max_size:
                return self._fail(events, 1009, f"message over {self.max_size} bytes")
            start = pos + head + 4
            if end - start < length:
                break
            payload = self._unmask(buf[start : start + length], buf[pos + head : start])
            pos = start + length
            if compressed:
                try:
                    payload = self._inflated(opcode, bool(fin), payload)
                except InflateError as exc:
                    return self._fail(events, exc.code, exc.reason)
            if not self._frame(opcode, bool(fin), payload, events):
                return 0
        return pos

    def _inflated(self, opcode: int, fin: bool, payload: bytes) -> bytes:
        """A compressed frame's payload, inflated (the message's first frame starts the
        inflater, its last ends it)."""
        inflater = self._inflater
        if opcode != OP_CONT:
            if self._frag_op:  # refused by _frame: a new message inside a fragmented one
                return payload
            inflater = Inflater(self.max_size)
        assert inflater is not None
        self._inflater = None if fin else inflater
        return inflater.feed(payload, fin)

    def _frame(self, opcode: int, fin: bool, payload: bytes, events: list[Event]) -> bool:
        """Handle one complete frame; False once the parser has failed."""
        if opcode >= OP_CLOSE:
            if opcode == OP_PING:
                events.append(Ping(payload))
            elif opcode == OP_PONG:
                events.append(Pong(payload))
            else:
                closing = parse_close(payload)
                events.append(closing)
                self._failed = True  # nothing after a close frame is read
                return False
            return True
        if opcode == OP_CONT:
            if not self._frag_op:
                self._fail(events, 1002, "continuation frame without a message")
                return False
            self._frames += 1
            if self.max_frames is not None and self._frames > self.max_frames:
                refusal = too_many_frames(self.max_frames)
                self._fail(events, int(refusal.code), refusal.reason)
                return False
            return self._fragment(self._frag_op, fin, payload, events)
        if self._frag_op:
            self._fail(events, 1002, "new message before the fragmented one ended")
            return False
        if fin:
            return self._whole(opcode, payload, events)
        self._frag_op = opcode
        self._frames = 1
        self._parts = []
        if opcode == OP_TEXT:
            self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        return self._fragment(opcode, fin, payload, events)

    def _whole(self, opcode: int, payload: bytes, events: list[Event]) -> bool:
        if opcode == OP_BINARY:
            events.append(BinaryMessage(payload))
            return True
        try:
            events.append(TextMessage(payload.decode()))
        except UnicodeDecodeError:
            self._fail(events, 1007, "text message is not UTF-8")
            return False
        return True

    def _fragment(self, opcode: int, fin: bool, payload: bytes, events: list[Event]) -> bool:
        parts = self._parts
        assert parts is not None
        self._size += len(payload)
        if opcode == OP_TEXT:
            assert self._decoder is not None
            try:
                parts.append(self._decoder.decode(payload, fin))  # type: ignore[arg-type]
            except UnicodeDecodeError:
                self._fail(events, 1007, "text message is not UTF-8")
                return False
        else:
            parts.append(payload)  # type: ignore[arg-type]
        if fin:
            if opcode == OP_TEXT:
                events.append(TextMessage("".join(parts)))  # type: ignore[arg-type]
            else:
                events.append(BinaryMessage(b"".join(parts)))  # type: ignore[arg-type]
            self._frag_op, self._parts, self._decoder, self._size = 0, None, None, 0
        return True
