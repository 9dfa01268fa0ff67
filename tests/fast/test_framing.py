"""The fast server's RFC 6455 rules, sans-I/O: handshake, client frames, server frames."""

from __future__ import annotations

import os

import pytest

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
    parse_close,
)
from tidings.engines.sockets.http import HeadError, HeadParser, match_route


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True,
                 rsv: int = 0) -> bytes:
    """A frame as a client sends it (masked unless told otherwise)."""
    n = len(payload)
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    if n < 126:
        head = bytes((first, (0x80 if mask else 0) | n))
    elif n < 65536:
        head = bytes((first, (0x80 if mask else 0) | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, (0x80 if mask else 0) | 127)) + n.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def test_accept_key_matches_the_rfc_example():
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_handshake_needs_upgrade_connection_version_and_a_16_byte_key():
    good = {"upgrade": "websocket", "connection": "keep-alive, Upgrade",
            "sec-websocket-version": "13", "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ=="}
    assert check_handshake("GET", good) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    for change, status in [({"upgrade": "h2c"}, 400), ({"connection": "close"}, 400),
                           ({"sec-websocket-version": "8"}, 426),
                           ({"sec-websocket-key": "c2hvcnQ="}, 400)]:
        with pytest.raises(HandshakeError) as refused:
            check_handshake("GET", {**good, **change})
        assert refused.value.status == status
    with pytest.raises(HandshakeError):
        check_handshake("POST", good)


def test_match_route_decides_from_the_request_line():
    routes = (b"GET /ws", b"POST /api/publish")
    assert match_route(b"GET /ws HTTP/1.1\r\n", routes) == b"GET /ws"
    assert match_route(b"GET /ws?token=x HTTP/1.1\r\n", routes) == b"GET /ws"
    assert match_route(b"GET /wsx HTTP/1.1\r\n", routes) is False
    assert match_route(b"POST /api/publish HTTP/1.1\r\n", routes) == b"POST /api/publish"
    assert match_route(b"POST /api/publishes HTTP/1.1\r\n", routes) is False
    assert match_route(b"GET /api/publish HTTP/1.1\r\n", routes) is False
    assert match_route(b"POST /ws HTTP/1.1\r\n", routes) is False
    assert match_route(b"GET /api HTTP/1.1", routes) is False
    assert match_route(b"GE", routes) is None
    assert match_route(b"GET /w", routes) is None
    assert match_route(b"POST /api/pub", routes) is None


def test_head_parser_reads_a_split_upgrade_request_and_says_where_frames_start():
    raw = (b"GET /ws?token=abc HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\n\r\n")
    parser = HeadParser()
    assert parser.feed(raw[:20]) is None
    done = parser.feed(raw[20:] + b"\x81")
    assert done is not None
    head, offset = done
    assert head.upgrade and head.method == "GET" and head.path == "/ws"
    assert head.query == b"token=abc" and head.headers["upgrade"] == "websocket"
    assert (raw[20:] + b"\x81")[offset:] == b"\x81"
    with pytest.raises(HeadError):
        HeadParser().feed(b"GET /ws HTTP/1.1\r\nBad Header\r\n\r\n")


def test_server_frames_use_the_shortest_length_encoding():
    assert ws_text_frame(b"hi") == b"\x81\x02hi"
    assert ws_text_frame(b"x" * 200)[:4] == b"\x81\x7e\x00\xc8"
    assert ws_text_frame(b"x" * 70000)[:10] == b"\x81\x7f" + (70000).to_bytes(8, "big")
    assert encode_frame(OP_PONG, b"p") == b"\x8a\x01p"
    assert close_frame(1000, "bye") == b"\x88\x05\x03\xe8bye"
    assert close_frame(None) == b"\x88\x00"
    assert len(close_frame(1000, "é" * 100)) == 2 + 2 + 122  # cut on a character boundary


def test_a_masked_text_frame_split_anywhere_gives_one_message():
    frame = client_frame(OP_TEXT, "héllo".encode() * 50)
    for cut in (1, 2, 5, 100, len(frame) - 1):
        parser = FrameParser(1 << 20)
        assert parser.feed(frame[:cut]) == []
        assert parser.feed(frame[cut:]) == [TextMessage("héllo" * 50)]


def test_fragmented_text_is_joined_and_control_frames_may_interleave():
    parser = FrameParser(1 << 20)
    text = "ünïcode".encode()
    events = parser.feed(client_frame(OP_TEXT, text[:3], fin=False)
                         + client_frame(OP_PING, b"p")
                         + client_frame(OP_CONT, text[3:7], fin=False))
    assert events == [Ping(b"p")]
    assert parser.feed(client_frame(OP_CONT, text[7:])) == [TextMessage("ünïcode")]
    assert parser.feed(client_frame(OP_BINARY, b"a", fin=False)
                       + client_frame(OP_CONT, b"b")) == [BinaryMessage(b"ab")]


def test_ping_pong_and_close_events():
    parser = FrameParser(1 << 20)
    assert parser.feed(client_frame(OP_PONG, b"x")) == [Pong(b"x")]
    events = parser.feed(client_frame(OP_CLOSE, (1001).to_bytes(2, "big") + b"bye")
                         + client_frame(OP_TEXT, b"ignored"))
    assert events == [CloseReceived(1001, "bye")]
    assert parser.feed(client_frame(OP_TEXT, b"more")) == []


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


def test_invalid_utf8_in_a_fragment_fails_before_the_message_ends():
    parser = FrameParser(1 << 20)
    events = parser.feed(client_frame(OP_TEXT, b"ok\xc0\xaf", fin=False))
    assert events == [ProtocolError(1007, "text message is not UTF-8")]


def test_an_oversize_header_is_refused_before_its_payload_arrives():
    parser = FrameParser(1024)
    header = client_frame(OP_TEXT, b"x" * 100000)[:14]  # header + mask only
    assert parser.feed(header) == [ProtocolError(1009, "message over 1024 bytes")]


def test_a_message_is_bounded_in_frames_and_the_count_restarts_with_each_message():
    parser = FrameParser(1 << 20, max_frames=3)
    three = (client_frame(OP_TEXT, b"a", fin=False) + client_frame(OP_CONT, b"", fin=False)
             + client_frame(OP_CONT, b"b"))
    assert parser.feed(three + three) == [TextMessage("ab"), TextMessage("ab")]
    four = client_frame(OP_TEXT, b"a", fin=False) + client_frame(OP_CONT, b"", fin=False) * 3
    assert parser.feed(four + client_frame(OP_CONT, b"", fin=False) * 100_000) == [
        ProtocolError(1009, "message in over 3 frames")]


def test_messages_before_a_violation_are_still_returned():
    parser = FrameParser(1 << 20)
    events = parser.feed(client_frame(OP_TEXT, b"one") + client_frame(OP_TEXT, b"two", mask=False))
    assert events[0] == TextMessage("one") and isinstance(events[1], ProtocolError)


def test_parse_close_accepts_registered_and_private_codes():
    for code in (1000, 1001, 1003, 1007, 1011, 1012, 3000, 4008, 4999):
        assert parse_close(code.to_bytes(2, "big")) == CloseReceived(code, "")
    for code in (0, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000):
        assert isinstance(parse_close(code.to_bytes(2, "big")), ProtocolError)
    assert parse_close(b"") == CloseReceived(None, "")
