"""The RFC 6455 codec (tidings.core.wire.websocket), checked against a reference.

The reference client encoder and server decoder (tests/rfc6455.py) are a few lines each, written
from RFC 6455 5.2 and not from the codec, so a shared misreading would have to be made twice.
Hypothesis draws conversations (messages cut into fragments anywhere, even inside a UTF-8
character, with pings and pongs between the fragments, each frame masked with its own key),
violations of each rule, and the ways the bytes may arrive (any split points, one byte at a
time); the parser must return the same events whatever the split.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.speedups import apply_mask

from tests.rfc6455 import client_frame, client_header, server_frames
from tidings.core.wire.frames import ws_text_frame
from tidings.core.wire.websocket import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    BinaryMessage,
    CloseReceived,
    Event,
    FrameParser,
    HandshakeError,
    Ping,
    Pong,
    ProtocolError,
    TextMessage,
    accept_key,
    check_handshake,
    close_frame,
    encode_frame,
    handshake_response,
    parse_close,
    unmask,
    valid_close_code,
)

FUZZ = settings(max_examples=100, deadline=None)  # the file runs in seconds

# Reference: RFC 6455 ------------------------------------------------------------------------

RFC_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 1.3
# RFC 6455 7.4.1 and the IANA registry: what a peer may put in a close frame. 1004 is reserved,
# 1005/1006/1015 must never be sent, 1016-2999 are unassigned, 3000-4999 are for libraries
# and applications.
SENDABLE_CODES = {1000, 1001, 1002, 1003, *range(1007, 1015), *range(3000, 5000)}
CONTROL_OPS = (OP_CLOSE, OP_PING, OP_PONG)
RESERVED_OPS = (3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF)


def split(wire: bytes, cuts: Sequence[int] | None) -> list[bytes]:
    """``wire`` cut at ``cuts``; None: one byte at a time."""
    if cuts is None:
        return [wire[i : i + 1] for i in range(len(wire))]
    bounds = [0, *sorted(cuts), len(wire)]
    return [wire[a:b] for a, b in pairwise(bounds)]


def feed(parser: FrameParser, chunks: Sequence[bytes]) -> list[Event]:
    events: list[Event] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    return events


def chunkings(wire: bytes) -> st.SearchStrategy[list[bytes]]:
    """The ways ``wire`` may arrive from a socket: whole, one byte at a time, or cut anywhere."""
    cuts = st.lists(st.integers(0, len(wire)), max_size=12) | st.none()
    return cuts.map(lambda c: split(wire, c))


# Strategies ---------------------------------------------------------------------------------

keys = st.binary(min_size=4, max_size=4)
# Lengths on either side of the 7-bit length's end (125/126) come up as often as short ones.
binary_payloads = st.binary(max_size=40) | st.sampled_from([125, 126, 127, 300]).flatmap(
    lambda n: st.binary(min_size=n, max_size=n)
)
control_payloads = st.binary(max_size=20) | st.binary(min_size=125, max_size=125)
close_codes = st.sampled_from(sorted(SENDABLE_CODES))
close_reasons = st.text(max_size=30)  # 30 characters are at most 120 bytes: they fit
invalid_utf8 = st.sampled_from(
    [
        b"\xff",
        b"\x80",
        b"\xc0\xaf",  # a byte never in UTF-8, a lone continuation, overlong "/"
        b"\xed\xa0\x80",
        b"\xf4\x90\x80\x80",  # a surrogate, a code point past U+10FFFF
        b"\xce",
        b"\xe2\x82",  # a character cut short (the text after it starts a new one)
    ]
)


class Conversation:
    """What a client sent (``frames``) and what the parser must make of it (``events``)."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.events: list[Event] = []
        self.biggest = 0  # bytes of the largest message
        self.most_frames = 1  # frames of the most fragmented message

    @property
    def wire(self) -> bytes:
        return b"".join(self.frames)


@st.composite
def conversations(draw: st.DrawFn, *, close: bool = True) -> Conversation:
    """Messages (text or binary, cut into fragments anywhere), pings and pongs between messages
    and between fragments, each frame with its own mask key; maybe a close frame last."""
    talk = Conversation()

    def controls() -> None:
        for _ in range(draw(st.integers(0, 2))):
            opcode = draw(st.sampled_from([OP_PING, OP_PONG]))
            payload = draw(control_payloads)
            talk.frames.append(client_frame(opcode, payload, key=draw(keys)))
            talk.events.append(Ping(payload) if opcode == OP_PING else Pong(payload))

    for _ in range(draw(st.integers(0, 4))):
        controls()
        message: Event
        if draw(st.booleans()):
            text = draw(st.text(max_size=30))
            opcode, data, message = OP_TEXT, text.encode(), TextMessage(text)
        else:
            data = draw(binary_payloads)
            opcode, message = OP_BINARY, BinaryMessage(data)
        pieces = split(data, draw(st.lists(st.integers(0, len(data)), max_size=4)))
        for i, piece in enumerate(pieces):
            if i:
                controls()
            talk.frames.append(
                client_frame(OP_CONT if i else opcode, piece, fin=i == len(pieces) - 1, key=draw(keys))
            )
        talk.events.append(message)
        talk.biggest = max(talk.biggest, len(data))
        talk.most_frames = max(talk.most_frames, len(pieces))
    controls()
    if close and draw(st.booleans()):
        code = draw(st.none() | close_codes)
        reason = "" if code is None else draw(close_reasons)
        payload = b"" if code is None else code.to_bytes(2, "big") + reason.encode()
        talk.frames.append(client_frame(OP_CLOSE, payload, key=draw(keys)))
        talk.events.append(CloseReceived(code, reason))
    return talk


def invalid_text(draw: st.DrawFn) -> bytes:
    return draw(st.text(max_size=10)).encode() + draw(invalid_utf8) + draw(st.text(max_size=10)).encode()


def fragments(draw: st.DrawFn, opcode: int, data: bytes, *, fin: bool = True) -> bytes:
    """``data`` as a message of ``opcode`` cut anywhere into frames; the last one has ``fin``."""
    pieces = split(data, draw(st.lists(st.integers(0, len(data)), max_size=4)))
    return b"".join(
        client_frame(OP_CONT if i else opcode, piece, key=draw(keys), fin=fin and i == len(pieces) - 1)
        for i, piece in enumerate(pieces)
    )


# The parser's limits in the violation tests: what conversations() sends stays within them.
MAX_SIZE, MAX_FRAMES = 300, 5


@st.composite
def violations(draw: st.DrawFn) -> tuple[bytes, int]:
    """Bytes breaking one rule, sent between messages, and the close code the rule answers."""
    data_op = st.sampled_from([OP_TEXT, OP_BINARY])
    kind = draw(
        st.sampled_from(
            [
                "reserved bits",
                "unmasked",
                "reserved opcode",
                "long control",
                "fragmented control",
                "continuation without message",
                "new message mid-fragment",
                "too big",
                "too many frames",
                "invalid utf-8",
                "bad close code",
                "close of 1 byte",
                "close reason not utf-8",
            ]
        )
    )
    payload = draw(st.binary(max_size=20))
    if kind == "reserved bits":
        opcode = draw(st.sampled_from([OP_CONT, OP_TEXT, OP_BINARY, *CONTROL_OPS]))
        return client_frame(opcode, payload, rsv=draw(st.integers(1, 7))), 1002
    if kind == "unmasked":
        opcode = draw(st.sampled_from([OP_TEXT, OP_BINARY, *CONTROL_OPS]))
        return client_frame(opcode, payload, mask=False), 1002
    if kind == "reserved opcode":
        return client_frame(draw(st.sampled_from(RESERVED_OPS)), payload), 1002
    if kind == "long control":
        n = draw(st.integers(126, 300))
        return client_frame(draw(st.sampled_from(CONTROL_OPS)), b"c" * n), 1002
    if kind == "fragmented control":
        return client_frame(draw(st.sampled_from(CONTROL_OPS)), payload, fin=False), 1002
    if kind == "continuation without message":
        return client_frame(OP_CONT, payload, fin=draw(st.booleans())), 1002
    if kind == "new message mid-fragment":
        started = fragments(draw, draw(data_op), b"ab", fin=False)
        return started + client_frame(draw(data_op), payload, fin=draw(st.booleans())), 1002
    if kind == "too big":
        # the header alone is refused: the payload never has to arrive
        done = draw(st.integers(0, MAX_SIZE))
        started = fragments(draw, OP_BINARY, b"x" * done, fin=False) if done else b""
        length = draw(st.integers(MAX_SIZE - done + 1, 2**63 - 1))
        return started + client_header(OP_CONT if done else draw(data_op), length), 1009
    if kind == "too many frames":
        frames = [client_frame(OP_BINARY, b"", fin=False)]
        frames += [client_frame(OP_CONT, b"", fin=False)] * (MAX_FRAMES - 1)
        return b"".join(frames) + client_frame(OP_CONT, b"", fin=draw(st.booleans())), 1009
    if kind == "invalid utf-8":
        return fragments(draw, OP_TEXT, invalid_text(draw)), 1007
    if kind == "bad close code":
        code = draw(st.integers(0, 0xFFFF).filter(lambda c: c not in SENDABLE_CODES))
        return client_frame(OP_CLOSE, code.to_bytes(2, "big") + payload[:10]), 1002
    if kind == "close of 1 byte":
        return client_frame(OP_CLOSE, payload[:1] or b"\x03"), 1002
    code = draw(close_codes)
    return client_frame(OP_CLOSE, code.to_bytes(2, "big") + invalid_text(draw)), 1007


# What any client may send: frames with any header bits, often breaking a rule, and stray bytes.
any_frame = st.builds(
    client_frame,
    opcode=st.integers(0, 15),
    payload=st.binary(max_size=30) | st.text(max_size=10).map(str.encode),
    fin=st.booleans(),
    key=keys,
    mask=st.sampled_from([True, True, True, False]),
    rsv=st.sampled_from([0, 0, 0, 0, 1, 4]),
)
any_bytes = st.lists(any_frame | st.binary(max_size=12), max_size=8).map(b"".join)


# Round trip ---------------------------------------------------------------------------------


@FUZZ
@given(talk=conversations(), data=st.data(), fast=st.booleans(), frame_limit=st.booleans())
def test_what_a_client_sends_comes_out_in_order_however_the_bytes_arrive(
    talk: Conversation, data: st.DataObject, fast: bool, frame_limit: bool
):
    # the limits exactly at the conversation's largest message: inclusive bounds
    parser = FrameParser(
        talk.biggest, talk.most_frames if frame_limit else None, unmask=apply_mask if fast else unmask
    )
    assert feed(parser, data.draw(chunkings(talk.wire))) == talk.events
    if talk.events and isinstance(talk.events[-1], CloseReceived):
        assert parser.feed(client_frame(OP_TEXT, b"after the close")) == []


@pytest.mark.parametrize("n", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_every_length_encoding_reads_back_split_at_every_header_byte(n: int):
    payload = bytes(range(256)) * (n // 256) + bytes(range(n % 256))
    frame = client_frame(OP_BINARY, payload, key=b"\x01\x80\x7f\xff")
    head = 6 if n <= 125 else 8 if n <= 0xFFFF else 14
    for cut in (*range(head), len(frame) - 1):  # within the header and mask, or one byte short
        parser = FrameParser(n)
        assert parser.feed(frame[:cut]) == []
        assert parser.feed(frame[cut:]) == [BinaryMessage(payload)]


# Masking ------------------------------------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=300), mask=keys, mutable=st.booleans())
def test_the_pure_unmask_is_the_c_one(data: bytes, mask: bytes, mutable: bool):
    # the parser passes the engine's choice a bytearray slice of its buffer, or bytes
    args = (bytearray(data), bytearray(mask)) if mutable else (data, mask)
    assert unmask(*args) == apply_mask(*args) == bytes(b ^ mask[i % 4] for i, b in enumerate(data))


# Anything at all ----------------------------------------------------------------------------


@FUZZ
@given(
    wire=any_bytes | st.binary(max_size=64),
    data=st.data(),
    max_size=st.integers(0, 40),
    max_frames=st.none() | st.integers(1, 3),
)
def test_any_bytes_give_events_and_at_most_one_ending_last(
    wire: bytes, data: st.DataObject, max_size: int, max_frames: int | None
):
    parser = FrameParser(max_size, max_frames)
    events = feed(parser, data.draw(chunkings(wire)))  # never raises
    assert all(isinstance(e, Event) for e in events)
    endings = [i for i, e in enumerate(events) if isinstance(e, ProtocolError | CloseReceived)]
    assert endings in ([], [len(events) - 1])
    if endings:
        assert parser.feed(client_frame(OP_TEXT, b"more")) == []
    for error in events:
        if isinstance(error, ProtocolError):
            assert error.code in (1002, 1007, 1009) and error.reason


@FUZZ
@given(wire=any_bytes, data=st.data(), max_size=st.integers(0, 40), max_frames=st.none() | st.integers(1, 3))
def test_the_events_do_not_depend_on_how_the_bytes_arrive(
    wire: bytes, data: st.DataObject, max_size: int, max_frames: int | None
):
    whole = FrameParser(max_size, max_frames).feed(wire)
    chunks = data.draw(chunkings(wire))
    assert feed(FrameParser(max_size, max_frames, unmask=apply_mask), chunks) == whole


# Violations ---------------------------------------------------------------------------------


@FUZZ
@given(talk=conversations(close=False), violation=violations(), after=any_bytes, data=st.data())
def test_each_violation_gets_its_close_code_after_the_events_before_it(
    talk: Conversation, violation: tuple[bytes, int], after: bytes, data: st.DataObject
):
    wire, code = violation
    parser = FrameParser(MAX_SIZE, MAX_FRAMES)
    events = feed(parser, data.draw(chunkings(talk.wire + wire + after)))
    assert events[:-1] == talk.events
    assert isinstance(events[-1], ProtocolError) and events[-1].code == code


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (client_frame(OP_TEXT, b"hi", mask=False), 1002),
        (client_frame(OP_TEXT, b"hi", rsv=1), 1002),
        (client_frame(OP_TEXT, b"hi", rsv=4), 1002),
        (client_frame(3, b""), 1002),
        (client_frame(0xB, b""), 1002),
        (client_frame(OP_PING, b"x" * 126), 1002),
        (client_frame(OP_PING, b"", fin=False), 1002),
        (client_frame(OP_CONT, b"x"), 1002),
        (client_frame(OP_TEXT, b"a", fin=False) + client_frame(OP_TEXT, b"b"), 1002),
        (client_frame(OP_TEXT, b"\xff\xfe"), 1007),
        (client_frame(OP_TEXT, b"\xce", fin=False) + client_frame(OP_CONT, b"A"), 1007),
        (client_frame(OP_CLOSE, b"\x03"), 1002),
        (client_frame(OP_CLOSE, (1005).to_bytes(2, "big")), 1002),
        (client_frame(OP_CLOSE, (999).to_bytes(2, "big")), 1002),
        (client_frame(OP_CLOSE, (1000).to_bytes(2, "big") + b"\xff"), 1007),
        (client_frame(OP_TEXT, b"x" * 2000), 1009),
        (client_frame(OP_TEXT, b"x" * 600, fin=False) + client_frame(OP_CONT, b"x" * 600), 1009),
    ],
)
def test_protocol_violations_are_an_event_with_the_close_code(wire: bytes, code: int):
    parser = FrameParser(1024)
    events = parser.feed(wire)
    assert isinstance(events[-1], ProtocolError) and events[-1].code == code
    assert parser.feed(client_frame(OP_TEXT, b"after")) == []


@FUZZ
@given(text=st.text(max_size=20), bad=invalid_utf8, data=st.data())
def test_invalid_utf8_is_refused_at_the_fragment_that_holds_it(text: str, bad: bytes, data: st.DataObject):
    """Not at the end of the message (no frame here is final), even cut inside a character."""
    sent = text.encode() + bad
    cut = data.draw(st.integers(0, len(sent)))
    sent = (
        client_frame(OP_TEXT, sent[:cut], fin=False)
        + client_frame(OP_CONT, sent[cut:], fin=False)
        + client_frame(OP_CONT, b"A", fin=False)
    )  # shows a character cut short
    assert feed(FrameParser(1 << 20), data.draw(chunkings(sent))) == [
        ProtocolError(1007, "text message is not UTF-8")
    ]


def test_an_oversize_header_is_refused_before_its_payload_arrives():
    parser = FrameParser(1024)
    assert parser.feed(client_header(OP_TEXT, 100000)) == [ProtocolError(1009, "message over 1024 bytes")]


def test_a_message_is_bounded_in_frames_and_the_count_restarts_with_each_message():
    parser = FrameParser(1 << 20, max_frames=3)
    three = (
        client_frame(OP_TEXT, b"a", fin=False)
        + client_frame(OP_CONT, b"", fin=False)
        + client_frame(OP_CONT, b"b")
    )
    assert parser.feed(three + three) == [TextMessage("ab"), TextMessage("ab")]
    four = client_frame(OP_TEXT, b"a", fin=False) + client_frame(OP_CONT, b"", fin=False) * 3
    assert parser.feed(four + client_frame(OP_CONT, b"", fin=False) * 100_000) == [
        ProtocolError(1009, "message in over 3 frames")
    ]


def test_fragmented_text_is_joined_and_control_frames_may_interleave():
    parser = FrameParser(1 << 20)
    text = "ünïcode".encode()
    events = parser.feed(
        client_frame(OP_TEXT, text[:3], fin=False)
        + client_frame(OP_PING, b"p")
        + client_frame(OP_CONT, text[3:7], fin=False)
    )
    assert events == [Ping(b"p")]
    assert parser.feed(client_frame(OP_CONT, text[7:])) == [TextMessage("ünïcode")]
    assert parser.feed(client_frame(OP_BINARY, b"a", fin=False) + client_frame(OP_CONT, b"b")) == [
        BinaryMessage(b"ab")
    ]


def test_ping_pong_and_close_events():
    parser = FrameParser(1 << 20)
    assert parser.feed(client_frame(OP_PONG, b"x")) == [Pong(b"x")]
    events = parser.feed(
        client_frame(OP_CLOSE, (1001).to_bytes(2, "big") + b"bye") + client_frame(OP_TEXT, b"ignored")
    )
    assert events == [CloseReceived(1001, "bye")]
    assert parser.feed(client_frame(OP_TEXT, b"more")) == []


# Close codes --------------------------------------------------------------------------------


def test_the_close_codes_a_peer_may_send_are_the_rfc_s():
    assert {code for code in range(0x10000) if valid_close_code(code)} == SENDABLE_CODES


def test_parse_close_reads_a_code_and_a_reason():
    assert parse_close(b"") == CloseReceived(None, "")
    assert parse_close((4008).to_bytes(2, "big") + "slow ✓".encode()) == CloseReceived(4008, "slow ✓")
    assert parse_close(b"\x03") == ProtocolError(1002, "close frame payload of 1 byte")
    assert parse_close((1015).to_bytes(2, "big")) == ProtocolError(1002, "invalid close code 1015")
    assert parse_close(b"\x03\xe8\xc3") == ProtocolError(1007, "close reason is not UTF-8")


# Server frames ------------------------------------------------------------------------------


@FUZZ
@given(opcode=st.sampled_from([OP_TEXT, OP_BINARY, OP_PING, OP_PONG, OP_CLOSE]), payload=binary_payloads)
def test_a_server_frame_reads_back_as_one_final_frame(opcode: int, payload: bytes):
    assert server_frames(encode_frame(opcode, payload)) == [(True, 0, opcode, payload)]


@pytest.mark.parametrize(("n", "head"), [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10), (70000, 10)])
def test_server_frames_use_the_shortest_length_encoding(n: int, head: int):
    payload = b"x" * n
    frame = encode_frame(OP_TEXT, payload)
    assert len(frame) == head + n and server_frames(frame) == [(True, 0, OP_TEXT, payload)]
    assert ws_text_frame(payload) == frame  # the fan-out's copy of the rule agrees


def reason_cut(reason: str, limit: int = 123) -> str:
    """The longest run of ``reason``'s first characters that fits ``limit`` bytes."""
    kept, size = "", 0
    for char in reason:
        size += len(char.encode())
        if size > limit:
            break
        kept += char
    return kept


@FUZZ
@given(code=close_codes, reason=close_reasons | st.text(min_size=30, max_size=130))
def test_a_close_frame_carries_its_reason_cut_at_123_bytes_on_a_character(code: int, reason: str):
    [(fin, rsv, opcode, payload)] = server_frames(close_frame(code, reason))
    assert (fin, rsv, opcode) == (True, 0, OP_CLOSE) and len(payload) <= 125
    assert parse_close(payload) == CloseReceived(code, reason_cut(reason))


def test_close_frame_examples():
    assert close_frame(1000, "bye") == b"\x88\x05\x03\xe8bye"
    assert close_frame(None) == b"\x88\x00"
    assert len(close_frame(1000, "é" * 100)) == 2 + 2 + 122  # 61 characters, not 61.5
    assert close_frame(1000, "a" + "€" * 41) == close_frame(1000, "a" + "€" * 40)  # 124 bytes


# Handshake ----------------------------------------------------------------------------------

GOOD = {
    "upgrade": "websocket",
    "connection": "keep-alive, Upgrade",
    "sec-websocket-version": "13",
    "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
}


def test_accept_key_matches_the_rfc_example():
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@FUZZ
@given(nonce=st.binary(min_size=16, max_size=16))
def test_any_16_byte_key_is_accepted_with_the_rfc_s_accept_value(nonce: bytes):
    key = base64.b64encode(nonce).decode()
    expected = base64.b64encode(hashlib.sha1(key.encode() + RFC_GUID).digest()).decode()
    assert check_handshake("GET", {**GOOD, "sec-websocket-key": key}) == expected


@pytest.mark.parametrize(
    ("method", "change", "status"),
    [
        ("POST", {}, 400),
        ("GET", {"upgrade": "h2c"}, 400),
        ("GET", {"upgrade": None}, 400),
        ("GET", {"connection": "close"}, 400),
        ("GET", {"sec-websocket-version": "8"}, 426),
        ("GET", {"sec-websocket-version": None}, 426),
        ("GET", {"sec-websocket-key": "c2hvcnQ="}, 400),  # 5 bytes
        ("GET", {"sec-websocket-key": "not base64!!"}, 400),
        ("GET", {"sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==é"}, 400),  # not ASCII
        ("GET", {"sec-websocket-key": None}, 400),
    ],
)
def test_a_bad_handshake_is_refused_with_its_status(method: str, change: dict[str, str | None], status: int):
    headers = {name: value for name, value in {**GOOD, **change}.items() if value is not None}
    with pytest.raises(HandshakeError) as refused:
        check_handshake(method, headers)
    assert refused.value.status == status and refused.value.message == str(refused.value)


def test_the_handshake_response_switches_protocols_with_the_extra_headers():
    plain = handshake_response("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    assert plain == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        b"\r\n\r\n"
    )
    extra = handshake_response("abc=", [("Set-Cookie", "a=b"), ("X-Node", "n1")])
    assert extra.endswith(b"Sec-WebSocket-Accept: abc=\r\nSet-Cookie: a=b\r\nX-Node: n1\r\n\r\n")
