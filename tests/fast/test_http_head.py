"""The owned-socket engine's request heads (tidings.engines.sockets.http), sans-I/O: which route a
request line asks for, and where an upgrade request's head ends. The WebSocket frame codec's tests
are in tests/core/wire/test_websocket.py."""

from __future__ import annotations

import pytest

from tidings.engines.sockets.http import HeadError, HeadParser, match_route


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
    raw = b"GET /ws?token=abc HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
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
