"""Hostile clients over raw sockets, on both engines: every one gets a clear refusal, and none
costs the server more than a bounded amount of memory and time (docs/topics/security.md).

- a WebSocket upgrade of a route that serves none: 404 and the JSON error body;
- a message in more frames than ``limits.max_message_frames``: closed with 1009; a Close between
  a message's fragments: the normal closing handshake;
- a request line over 65,535 bytes, a head with bare LF line ends: 400 and the JSON body;
- bytes sent before the 101 while admission waits: reading pauses, the buffer stays small;
- a head over ``limits.max_header_bytes`` (any route): 431 and the JSON body;
- an internal error under a WebSocket command: 1011; a chunked API body over
  ``limits.max_request_bytes``: 413.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.rawws import RawWS
from tests.rfc6455 import client_frame
from tests.serving import ENGINE, RunningServer, serve
from tests.wsclient import WS
from tidings.core.wire.websocket import OP_CLOSE, OP_CONT, OP_TEXT

DEADLINE = 10.0


@pytest.fixture(scope="module")
def default_servers() -> Iterator[dict[str, RunningServer]]:
    """A node with default settings per engine, started on first use."""
    with contextlib.ExitStack() as stack:

        class Servers(dict[str, RunningServer]):
            def __missing__(self, engine: str) -> RunningServer:
                self[engine] = stack.enter_context(serve(engine=engine))
                return self[engine]

        yield Servers()


@pytest.fixture
def server(default_servers: dict[str, RunningServer]) -> RunningServer:
    return default_servers[ENGINE.get()]


def upgrade_request(path: str, extra: str = "") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


async def exchange(port: int, data: bytes, timeout: float = DEADLINE) -> bytes:
    """Send ``data``, then read until the server closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    got = b""
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                got += chunk
    except ConnectionResetError:
        pass
    finally:
        writer.close()
    return got


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), raw[:200]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def assert_json_error(raw: bytes, status: int, code: str) -> str:
    got, headers, body = parse_response(raw)
    assert got == status, raw[:300]
    assert headers["content-type"] == "application/json"
    error = orjson.loads(body)["error"]
    assert error["code"] == code
    message: str = error["message"]
    return message


# A WebSocket upgrade is taken on /ws only ------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/sse?channel=a", "/stream?channel=a", "/poll?channel=a", "/healthz", "/api/publish"]
)
async def test_an_upgrade_of_a_route_without_websocket_is_refused_with_404(server: RunningServer, path: str):
    raw = await exchange(server.port, upgrade_request(path))
    message = assert_json_error(raw, 404, "not_found")
    assert "no WebSocket endpoint" in message


async def test_with_websocket_off_an_upgrade_of_ws_is_refused_with_404():
    with serve(websocket=False) as running:
        raw = await exchange(running.port, upgrade_request("/ws"))
        raw_sse = await exchange(running.port, upgrade_request("/sse?channel=a"))
    assert "websocket = false" in assert_json_error(raw, 404, "not_found")
    assert_json_error(raw_sse, 404, "not_found")


# A message's frames are bounded ------------------------------------------------------------------


async def test_a_message_of_max_frames_is_taken_and_one_frame_more_closes_with_1009():
    with serve(limits={"max_message_frames": 16}) as running:
        ws = await RawWS.open(running.port)
        # 16 frames: the first, 14 empty continuations, the last
        ws.writer.write(
            client_frame(OP_TEXT, b'{"op":"ping",', fin=False)
            + client_frame(OP_CONT, b"", fin=False) * 14
            + client_frame(OP_CONT, b'"ref":1}')
        )
        assert await ws.data_frame() == (OP_TEXT, b'{"op":"pong","ref":1}')
        # 17 frames: refused at the 17th, before the message ends
        ws.writer.write(
            client_frame(OP_TEXT, b'{"op":"ping",', fin=False) + client_frame(OP_CONT, b"", fin=False) * 16
        )
        opcode, payload = await ws.data_frame()
        ws.close()
    assert opcode == OP_CLOSE
    assert int.from_bytes(payload[:2], "big") == 1009
    assert payload[2:].decode() == "message in over 16 frames"


async def test_a_close_between_the_fragments_of_a_message_is_answered_with_the_normal_close(
    server: RunningServer,
):
    """Autobahn case 7.1.5: control frames may come between a message's fragments (RFC 6455 5.4),
    a Close too: the unfinished message is dropped and the closing handshake goes as for any
    other Close (its code echoed), rather than failing the connection with 1002."""
    ws = await RawWS.open(server.port)
    close = client_frame(OP_CLOSE, (1000).to_bytes(2, "big"))
    ws.send(client_frame(OP_TEXT, b'{"op":"pi', fin=False) + close)
    opcode, payload = await ws.data_frame()
    ws.close()
    assert opcode == OP_CLOSE
    assert int.from_bytes(payload[:2], "big") == 1000


async def _ping_rtt(ws: WS) -> float:
    started = time.perf_counter()
    await ws.request("ping")
    return time.perf_counter() - started


async def test_a_flood_of_empty_continuation_frames_is_cut_short_and_others_stay_fast(server: RunningServer):
    """A million empty continuation frames (6 MB): the server reads at most
    ``max_message_frames`` of them, and a healthy client's round trip stays near its own."""
    async with await WS.open(server.ws_url) as healthy:
        baseline = statistics.median([await _ping_rtt(healthy) for _ in range(30)])
        attacker = await RawWS.open(server.port)
        attacker.writer.write(
            client_frame(OP_TEXT, b"{", fin=False) + client_frame(OP_CONT, b"", fin=False) * 1_000_000
        )
        ended = asyncio.get_running_loop().create_task(_until_closed(attacker))
        during = [await _ping_rtt(healthy)]
        while not ended.done():
            during.append(await _ping_rtt(healthy))
        assert await ended < DEADLINE
        for _ in range(5):
            during.append(await _ping_rtt(healthy))
    # before the bound: the flood held the loop for seconds (4.6 s against 0.4 ms); the floor
    # absorbs scheduling noise (the server shares this process and its GIL)
    assert max(during) < max(50 * baseline, 0.25), (baseline, sorted(during)[-5:])


async def _until_closed(ws: RawWS) -> float:
    started = time.perf_counter()
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        async with asyncio.timeout(DEADLINE):
            while await ws.reader.read(65536):
                pass
    ws.close()
    return time.perf_counter() - started


# Clean refusals of bad heads ---------------------------------------------------------------------


def _errors_logged(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize("path", ["/sse", "/ws", "/healthz"])
async def test_a_request_line_over_65535_bytes_gets_400_and_no_traceback(
    path: str, caplog: pytest.LogCaptureFixture
):
    url = f"{path}?channel=a&pad={'a' * 70_000}"
    upgrade = path == "/ws"
    request = upgrade_request(url) if upgrade else f"GET {url} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    with serve(limits={"max_header_bytes": 256 * 1024}) as running:
        with caplog.at_level(logging.INFO):
            raw = await exchange(running.port, request)
            # an upgrade on the ASGI engine is read by `websockets`, which has its own limit
            # (8 KiB a line): 414
            status = 414 if upgrade and ENGINE.get() == "asgi" else 400
            assert_json_error(raw, status, "too_large" if status == 414 else "bad_request")
        # the server still serves
        async with httpx.AsyncClient(base_url=running.url) as client:
            assert (await client.get("/healthz")).status_code == 200
    assert not _errors_logged(caplog.records)


@pytest.mark.parametrize("path", ["/sse?channel=a", "/ws", "/healthz"])
async def test_a_head_with_bare_lf_line_ends_gets_400_at_once(server: RunningServer, path: str):
    request = f"GET {path} HTTP/1.1\nHost: x\n\n".encode()
    started = time.perf_counter()
    raw = await exchange(server.port, request, timeout=5)
    assert_json_error(raw, 400, "bad_request")
    assert time.perf_counter() - started < 5  # not the handshake timeout (10 s)


class StalledServer:
    """A listening socket that never accepts: an HTTP request to it hangs (a slow JWKS host)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/jwks.json"

    def close(self) -> None:
        self.sock.close()


def _token_with_unknown_kid() -> str:
    def b64(value: Any) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()

    header = b64({"alg": "RS256", "kid": "k1", "typ": "JWT"})
    payload = b64({"sub": "1", "exp": int(time.time()) + 600})
    return f"{header}.{payload}.{base64.urlsafe_b64encode(os.urandom(256)).rstrip(b'=').decode()}"


async def test_bytes_sent_before_the_101_while_admission_waits_stay_bounded():
    """The token's key is fetched from a JWKS host that does not answer; meanwhile the client
    sends as fast as it can. The server stops reading (as flow control does) instead of
    buffering it all: what it holds stays under a bound, and the client is blocked."""
    jwks = StalledServer()
    try:
        with serve(auth={"jwks_url": jwks.url, "jwks_timeout": 30}) as running:
            sock = socket.create_connection(("127.0.0.1", running.port))
            sock.sendall(upgrade_request("/ws", f"Authorization: Bearer {_token_with_unknown_kid()}\r\n"))
            sock.setblocking(False)
            chunk = client_frame(OP_TEXT, b"x" * 60_000)
            sent, stalls = 0, 0
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                try:
                    sent += sock.send(chunk)
                except BlockingIOError:
                    stalls += 1
                    await asyncio.sleep(0.01)
            held = _bytes_held_before_open(running)
            sock.close()
            jwks.close()  # the fetch fails now: nothing is left for the shutdown to wait on
    finally:
        jwks.close()
    # before: the fast engine read everything, 41 MB held after 10 s
    assert held < 2 * 2**20, held
    assert stalls, f"the server read all of {sent} bytes"
    assert sent < 32 * 2**20  # what the sockets' buffers hold, not what the server reads


def _bytes_held_before_open(running: RunningServer) -> int:
    """What the server's connections buffer, read on the server's loop."""
    loop = running.server.servers[0].get_loop()  # type: ignore[attr-defined]
    done = threading.Event()
    held = [0]

    def count() -> None:
        for connection in running.server.server_state.connections:
            held[0] += len(getattr(connection, "_buf", b"") or b"")
            conn = getattr(connection, "conn", None)  # the ASGI engine's websockets protocol
            if conn is not None:
                held[0] += len(conn.reader.buffer)
        done.set()

    loop.call_soon_threadsafe(count)
    assert done.wait(DEADLINE)
    return held[0]


# The head's size is bounded on every route ------------------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/sse?channel=a", "/api/info"])
async def test_an_unfinished_head_over_the_limit_gets_431(server: RunningServer, path: str):
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Pad: {'a' * 70_000}".encode()  # no end
    message = assert_json_error(await exchange(server.port, request), 431, "too_large")
    assert "65536" in message


async def test_a_whole_head_over_the_limit_gets_431_and_one_under_it_is_served(server: RunningServer):
    pads = "".join(f"X-Pad-{i}: {'a' * 1000}\r\n" for i in range(70))  # 70 KB of headers
    raw = await exchange(server.port, f"GET /healthz HTTP/1.1\r\nHost: x\r\n{pads}\r\n".encode())
    assert_json_error(raw, 431, "too_large")
    pads = "".join(f"X-Pad-{i}: {'a' * 1000}\r\n" for i in range(60))  # 60 KB
    raw = await exchange(
        server.port, f"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{pads}\r\n".encode()
    )
    assert parse_response(raw)[0] == 200


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_ten_heads_of_8_mb_cost_the_server_little_memory(server: RunningServer):
    """The server runs in this process: its peak RSS is sampled while ten clients each send an
    8 MB header. Without the limit, the headers were kept whole (and answered 200)."""
    blob = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (8 * 2**20) + b"\r\n\r\n"
    peak, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.002)

    before = _rss()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:  # blocking sockets in threads: the client side copies nothing
        answers = await asyncio.gather(*(asyncio.to_thread(_blast, server.port, blob) for _ in range(10)))
    finally:
        stop.set()
        sampler.join()
    assert all(a == b"" or parse_response(a)[0] == 431 for a in answers), [a[:40] for a in answers]
    assert peak[0] - before < 24 * 2**20, (peak[0] - before) / 2**20
    async with httpx.AsyncClient(base_url=server.url) as client:
        assert (await client.get("/healthz")).status_code == 200


def _blast(port: int, data: bytes) -> bytes:
    """Send ``data`` (the server may refuse it midway: then the rest is not sent); the answer."""
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        with contextlib.suppress(ConnectionError):
            sock.sendall(data)
        with contextlib.suppress(ConnectionError):
            while chunk := sock.recv(65536):
                got += chunk
    return got


# An internal error closes with 1011; a chunked API body over the limit gets 413 ----------------


async def test_an_internal_error_under_a_websocket_command_closes_with_1011(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
):
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")  # fault injected into the running node

    monkeypatch.setattr(server.node, "history", broken)
    async with await WS.open(server.ws_url) as ws:
        await ws.send("history", channel="fault")
        with pytest.raises(Exception) as closed:
            await ws.recv()
        assert closed.value.rcvd.code == 1011, closed.value  # type: ignore[attr-defined]


async def test_a_chunked_api_body_over_the_limit_gets_413():
    async def body() -> Any:
        for _ in range(8):
            yield b" " * 512

    with serve(limits={"max_request_bytes": 1024}, api_key="k" * 32) as running:
        async with httpx.AsyncClient(base_url=running.url) as client:
            r = await client.post(
                "/api/publish",
                content=body(),
                headers={"Authorization": "Bearer " + "k" * 32, "Content-Type": "application/json"},
            )
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "too_large"
