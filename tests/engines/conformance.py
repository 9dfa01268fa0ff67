"""One behaviour suite for both serving engines (issue 18, item 4), built like the broker suite.

A test module subclasses :class:`EngineConformance` and sets :attr:`~EngineConformance.engine`
(``"sockets"``: the owned-socket engine, ``server.engine = "fast"``; ``"asgi"``: everything through
the ASGI app); its :attr:`~EngineConformance.differs` names the tests that engine still fails, each
with what it does instead. Those run as ``xfail(strict=True)``: they are the spec for the
engines' shared machines, and flip to a failure (to be removed from ``differs``) once the engine
behaves. Every test here asserts what both engines must do; where a difference is
inherent (docs/topics/engines.md), the test says so and asserts only what is common.

Real servers on loopback (:func:`tests.serving.serve`), real clients (``websockets``, ``httpx``,
raw sockets and :class:`tests.rawws.RawWS` for what no library sends), small timeouts and
bounded waits, never a timing ratio.

Rows of issue 18 and other transport rules already tested on both engines elsewhere (not copied
here):

- replay outside the outbox limit on SSE and NDJSON, heartbeat spacing of an idle stream, the
  first SSE block, a resumed client that then reads nothing cut as slow:
  ``tests/transports/test_streams.py``;
- an unread NDJSON stream ended with a 4008 notice:
  ``tests/transports/test_http_transports.py::test_a_stream_that_is_not_read_is_ended_as_a_slow_consumer``;
- a client leaving a held long poll leaves nothing behind:
  ``tests/transports/test_http_transports.py::test_a_client_leaving_a_held_long_poll_leaves_nothing_behind``;
- a user's streams ended by ``/api/disconnect`` with a notice, the close log line:
  ``tests/transports/test_http_transports.py``;
- a slow WebSocket subscriber closed with 4008, others unaffected; binary 1003, invalid JSON
  1007, an oversize frame 1009, bad commands answered with an error:
  ``tests/e2e/test_websocket.py``; a message of too many frames 1009, an internal error 1011:
  ``tests/e2e/test_hostile_clients.py``;
- connection limits on every transport: ``tests/transports/test_connection_limits.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import jwt
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.engines.stream_compression import StreamCompression
from tests.rawws import RawWS
from tests.rfc6455 import client_frame
from tests.serving import RunningServer, serve
from tests.transports.readers import (
    channel_name,
    dechunk,
    publish,
    wait_until,
)
from tidings.core.cursor import cursor_position
from tidings.core.wire.websocket import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT

__all__ = ["EngineConformance"]

DEADLINE = 10.0
SECRET = "engine-conformance-secret-0123456789abcdef"
API_KEY = "engine-conformance-key-0123456789abcdef"
STREAMS = ["sse", "stream"]
PATHS = {"sse": "/sse", "stream": "/stream"}
# The slow-consumer tests: a small outbox, big publications, a client receive buffer of 4 KB.
SMALL_OUTBOX = 65536
BIG = "x" * 60_000
# Inherent difference: the sockets engine holds a publish's answer while a WebSocket subscriber
# of its channel lags (flow control, measured by pings behind the data; docs/topics/flow.md), the
# ASGI engine cannot measure that. Off where a test's subscriber stops reading on purpose.
NO_FLOW = {"enabled": False}
TCP_ESTABLISHED = "01"  # the state column of /proc/net/tcp (include/net/tcp_states.h)


async def overflows(http: httpx.AsyncClient, transport: str) -> float:
    """``tidings_outbox_overflows_total`` of ``transport``."""
    for family in text_string_to_metric_families((await http.get("/metrics")).text):
        for sample in family.samples:
            if (
                sample.name == "tidings_outbox_overflows_total"
                and sample.labels.get("transport") == transport
            ):
                return sample.value
    return 0.0


def token(user: str, ttl: float = 600) -> str:
    return jwt.encode({"sub": user, "exp": int(time.time() + ttl)}, SECRET, algorithm="HS256")


async def soon_expiring_token(user: str) -> str:
    """A token that expires 0.5 to 1 s from now (``exp`` is in whole seconds)."""
    if time.time() % 1 > 0.5:
        await asyncio.sleep(1.01 - time.time() % 1)
    return jwt.encode({"sub": user, "exp": int(time.time()) + 1}, SECRET, algorithm="HS256")


def client_end_established(client: socket.socket) -> bool:
    """Whether ``client``'s own kernel still has its connection open (Linux, TCP_INFO): a
    reset from the server ends it even while unread data waits in its receive buffer."""
    return client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0] == 1  # ESTABLISHED


def server_end_established(server_port: int, client: socket.socket) -> bool:
    """Whether the server's end of ``client``'s connection is still open (Linux: the kernel's
    table of IPv4 TCP sockets; the server runs in this process, its socket is listed there).
    Once the server has closed it, it is gone or in a closing state (FIN-WAIT-1 while the
    kernel still holds bytes the client never read)."""
    client_port = client.getsockname()[1]
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, remote, state = line.split()[1:4]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
            return state == TCP_ESTABLISHED
    return False


def unread_socket(port: int, request: bytes) -> socket.socket:
    """A client socket with a 4 KB receive buffer that sends ``request`` and reads only the
    first 4 KB of the answer: a consumer that stopped reading."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(DEADLINE)
    sock.connect(("127.0.0.1", port))
    sock.sendall(request)
    return sock


def http_get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's example
# What both engines answer to every acceptable permessage-deflate offer (RFC 7692).
DEFLATE = "permessage-deflate; client_no_context_takeover"  # the server keeps its context
DEFLATE_ALONE = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


NODE_PREFIX = Path(__file__).resolve().parents[2] / ".cache" / "node"  # as tests/test_js_types.py
NODE_WS = NODE_PREFIX / "node_modules" / "ws"
# A Node ``ws`` subscriber (perMessageDeflate on, as ws' default): prints the negotiated
# parameters, then every message as a JSON line, and leaves after the first publication.
NODE_SUBSCRIBER = """
const WebSocket = require(process.argv[1]);
const ws = new WebSocket(process.argv[2], {perMessageDeflate: true});
ws.on("open", () => {
  console.log(JSON.stringify(ws._extensions["permessage-deflate"].params));
  ws.send(JSON.stringify({op: "subscribe", ref: 1, channel: process.argv[3]}));
});
let seen = 0;
ws.on("message", (data) => {
  const message = JSON.parse(data);
  console.log(JSON.stringify(message));
  if (message.op === "message" && ++seen >= Number(process.argv[4] || 1)) ws.close();
});
ws.on("error", (error) => { console.error(String(error)); process.exit(1); });
"""


def node_ws() -> Path:
    """The npm package ``ws`` (installed into .cache/node on first use; skips without npm)."""
    if not NODE_WS.exists():
        if shutil.which("npm") is None or shutil.which("node") is None:
            pytest.skip("node and npm are needed for the Node ws client")
        result = subprocess.run(
            [
                "npm",
                "install",
                "--silent",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(NODE_PREFIX),
                "ws@8.23.0",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0:
            pytest.skip(f"ws could not be installed from npm: {result.stderr[-300:]}")
    return NODE_WS


def raw_deflate(message: bytes) -> bytes:
    """``message`` as a client compresses it (RFC 7692 7.2.1: no context, the tail cut)."""
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (z.compress(message) + z.flush(zlib.Z_SYNC_FLUSH))[:-4]


def ws_upgrade() -> bytes:
    return (
        f"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def publish_request(channel: str, data: Any, key: str | None = None) -> bytes:
    body = orjson.dumps({"channel": channel, "data": data})
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (
        f"POST /api/publish HTTP/1.1\r\nHost: t\r\n{auth}Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class HTTPConnection:
    """One raw HTTP/1.1 connection; reads answers by Content-Length or chunks."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> HTTPConnection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def answer(self) -> tuple[int, dict[str, str], bytes]:
        """The next answer: status, headers (lower-case names), body (de-chunked)."""
        async with asyncio.timeout(DEADLINE):
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = {
                name.lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines[1:] if line)
            }
            if headers.get("transfer-encoding") != "chunked":
                body = await self.reader.readexactly(int(headers.get("content-length", "0")))
                return int(lines[0].split()[1]), headers, body
            body = b""
            while size := int((await self.reader.readuntil(b"\r\n"))[:-2], 16):
                body += (await self.reader.readexactly(size + 2))[:-2]
            await self.reader.readexactly(2)
            return int(lines[0].split()[1]), headers, body

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def read_to_end(sock: socket.socket) -> bytes:
    """What ``sock`` holds until the server ends the response (its last chunk) or the
    connection."""
    received = b""
    with contextlib.suppress(ConnectionError):
        while not received.endswith(b"\r\n0\r\n\r\n") and (
            chunk := await asyncio.to_thread(sock.recv, 1 << 20)
        ):
            received += chunk
    return received


def sse_events(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """``(event, data)`` of each event of an event-stream body (comments skipped)."""
    events = []
    for block in body.decode().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            name, _, value = line.partition(": ")
            if name in ("event", "data"):
                fields[name] = value
        if "data" in fields:
            events.append((fields.get("event", "message"), orjson.loads(fields["data"])))
    return events


async def items(response: httpx.Response, kind: str) -> AsyncIterator[dict[str, Any]]:
    """The items of an SSE or NDJSON response as it reads them, heartbeats left out; notices
    carry ``op`` (``ready``, ``gap``, ``disconnect``), publications do not."""
    if kind == "stream":
        async for line in response.aiter_lines():
            if line and (item := orjson.loads(line)).get("op") != "heartbeat":
                yield item
        return
    event = ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            item = orjson.loads(line.removeprefix("data: "))
            if event in ("ready", "gap", "disconnect"):
                item["op"] = event
            yield item
        elif not line:
            event = ""


async def stream_items(http: httpx.AsyncClient, kind: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every item of an SSE or NDJSON stream until the server ends it; fails if it does not
    end within the deadline."""
    async with asyncio.timeout(DEADLINE), http.stream("GET", PATHS[kind], params=params) as response:
        assert response.status_code == 200, await response.aread()
        return [item async for item in items(response, kind)]


class EngineConformance(StreamCompression):
    """The suite (with the compressed streams' tests of :class:`StreamCompression`). See the
    module docstring for what a subclass provides."""

    #: ``"sockets"`` or ``"asgi"`` (:func:`tests.serving.serve`'s ``engine``).
    engine: ClassVar[str]
    #: Tests this engine still fails: a test's name (all its cases) or ``name[case]`` → what the
    #: engine does instead (and the row of issue 18's table, if it is one).
    differs: ClassVar[dict[str, str]] = {}

    @pytest.fixture(autouse=True)
    def _known_difference(self, request: pytest.FixtureRequest) -> None:
        reason = self.differs.get(request.node.name) or self.differs.get(request.function.__name__)
        if reason is not None:
            request.applymarker(pytest.mark.xfail(strict=True, reason=reason))

    def serve(self, **settings: Any) -> contextlib.AbstractContextManager[RunningServer]:
        return serve(engine=self.engine, **settings)

    @pytest.fixture(scope="class")
    @classmethod
    def server(cls) -> Iterator[RunningServer]:
        """One node per engine for the tests that need no settings of their own: frames up to
        4 KB, tokens signed with :data:`SECRET`."""
        with serve(engine=cls.engine, token_secret=SECRET, limits={"max_frame_bytes": 4096}) as running:
            yield running

    @pytest.fixture(scope="class")
    @classmethod
    def slow_server(cls) -> Iterator[RunningServer]:
        """For the outbox tests: a 64 KB outbox, ``outbox_messages`` at its minimum (deprecated,
        no effect), a close timeout of 0.5 s (``limits.idle_timeout``), no flow control."""
        with serve(
            engine=cls.engine,
            flow=NO_FLOW,
            limits={
                "outbox_bytes": SMALL_OUTBOX,
                "outbox_messages": 10,
                "idle_timeout": 0.5,
            },
        ) as running:
            yield running

    @pytest.fixture(scope="class")
    @classmethod
    def short_streams(cls) -> Iterator[RunningServer]:
        """Streams end after 0.3 s (``sse.max_duration``)."""
        with serve(engine=cls.engine, sse={"max_duration": 0.3}) as running:
            yield running

    @pytest.fixture(scope="class")
    @classmethod
    def pinging(cls) -> Iterator[RunningServer]:
        """WebSocket pings every 0.2 s, closed after 0.8 s without an answer."""
        with serve(engine=cls.engine, limits={"ping_interval": 0.2, "idle_timeout": 0.8}) as running:
            yield running

    @pytest.fixture
    async def http(self, server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
        async with httpx.AsyncClient(base_url=server.url, timeout=DEADLINE) as client:
            yield client

    # row 1: a resume's replay does not count against the outbox limit ----------------------------
    # (SSE and NDJSON: tests/transports/test_streams.py)

    @pytest.mark.parametrize("how", ["since", "cursor"])
    async def test_a_websocket_resume_longer_than_the_outbox_limit_is_replayed_whole(
        self, slow_server: RunningServer, how: str
    ) -> None:
        """100 publications of 20 KB (twice the default ``limits.outbox_bytes``, thirty times
        this server's) after the position a WebSocket subscribe names: ``subscribed``, then
        all 100, no 4008."""
        server = slow_server
        channel = channel_name()
        payload = "r" * 20_000
        async with httpx.AsyncClient(base_url=server.url, timeout=DEADLINE) as http:
            assert server.settings.limits.outbox_bytes < 100 * len(payload)
            start = (await http.get("/poll", params={"channel": channel, "timeout": 0})).json()["cursor"]
            await publish(http, channel, *[payload] * 100)
        position = cursor_position(start, channel)
        resume: dict[str, Any] = (
            {"cursor": start}
            if how == "cursor"
            else {"since": {"epoch": position.epoch, "offset": position.offset}}
        )
        async with connect(server.ws_url, max_size=None, open_timeout=DEADLINE) as ws:
            await ws.send(orjson.dumps({"op": "subscribe", "ref": 1, "channel": channel, **resume}).decode())
            frames = [orjson.loads(await asyncio.wait_for(ws.recv(), DEADLINE)) for _ in range(101)]
        assert frames[0]["op"] == "subscribed" and frames[0]["recovered"] is True, frames[0]
        assert [f["offset"] for f in frames[1:]] == list(range(1, 101))
        assert all(f["op"] == "message" and f["data"] == payload for f in frames[1:])

    # row 2: the slow-consumer rule is one byte rule ----------------------------------------------

    @pytest.mark.parametrize("kind", ["ws", "sse", "stream"])
    async def test_more_messages_at_once_than_outbox_messages_are_not_a_slow_consumer(
        self, kind: str
    ) -> None:
        """``limits.outbox_messages`` is deprecated and has no effect, the rule is bytes: a
        client of 50 channels gets 4 broadcasts to all of them, each 50 messages queued at
        once (one fan-out), five times ``outbox_messages = 10``, under ``outbox_bytes``: it gets
        all 200 (with their 50-channel cursors, a few hundred KB)."""
        channels = [channel_name() for _ in range(50)]
        with self.serve(limits={"outbox_messages": 10}) as server:
            got = await self._four_broadcasts_to(server, kind, channels)
        assert sorted((item["channel"], item["offset"]) for item in got) == sorted(
            (channel, offset) for channel in channels for offset in range(1, 5)
        )

    async def _four_broadcasts_to(
        self, server: RunningServer, kind: str, channels: list[str]
    ) -> list[dict[str, Any]]:
        """What a ``kind`` client of ``channels`` gets of 4 broadcasts to them, published while
        it does not read; checks that its outbox did not overflow."""
        async with httpx.AsyncClient(base_url=server.url, timeout=DEADLINE) as http:
            before = await overflows(http, kind)
            if kind == "ws":
                async with connect(server.ws_url, open_timeout=DEADLINE) as ws:
                    for ref, channel in enumerate(channels, 1):
                        await ws.send(
                            orjson.dumps({"op": "subscribe", "ref": ref, "channel": channel}).decode()
                        )
                    for _ in channels:
                        assert orjson.loads(await ws.recv())["op"] == "subscribed"
                    await self._broadcasts(http, channels)
                    got = [
                        orjson.loads(await asyncio.wait_for(ws.recv(), DEADLINE))
                        for _ in range(4 * len(channels))
                    ]
            else:
                async with http.stream(
                    "GET", PATHS[kind], params=[("channel", ch) for ch in channels]
                ) as response:
                    stream = items(response, kind)
                    assert (await anext(stream))["op"] == "ready"
                    await self._broadcasts(http, channels)
                    got = [await anext(stream) for _ in range(4 * len(channels))]
            assert await overflows(http, kind) == before
        return got

    @staticmethod
    async def _broadcasts(http: httpx.AsyncClient, channels: list[str]) -> None:
        for i in range(4):
            answer = await http.post("/api/broadcast", json={"channels": channels, "data": [i, "b" * 50]})
            assert answer.status_code == 200, answer.text

    # row 3: the notice when a stream's outbox overflows ------------------------------------------
    # (NDJSON: tests/transports/test_http_transports.py; WebSocket 4008: tests/e2e)

    async def test_an_unread_sse_stream_is_ended_with_a_disconnect_event(self) -> None:
        """A client that stops reading fills its socket, then the outbox: the stream ends with
        ``event: disconnect`` (4008, reconnect) behind what the socket held, then its last
        chunk; the node forgets it."""
        channel = channel_name()
        with self.serve(limits={"outbox_bytes": SMALL_OUTBOX}, flow=NO_FLOW) as server:
            sock = unread_socket(server.port, http_get(f"/sse?channel={channel}"))
            with sock:
                received = sock.recv(4096)  # the head and the ready event; then nothing is read
                async with httpx.AsyncClient(base_url=server.url, timeout=DEADLINE) as http:
                    await self._until_slow(http, channel, "sse")
                    received += await read_to_end(sock)
            await wait_until(
                lambda: server.node.connection_counts().get("sse", 0) == 0, "the stream to leave the node"
            )
        head, _, body = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert received.endswith(b"\r\n0\r\n\r\n"), received[-200:]
        events = sse_events(dechunk(body))
        assert events[0][0] == "ready"
        assert events[-1] == (
            "disconnect",
            {"code": 4008, "reason": events[-1][1]["reason"], "reconnect": True},
        )

    @staticmethod
    async def _until_slow(http: httpx.AsyncClient, channel: str, transport: str) -> None:
        """Publish 60 KB publications until ``transport``'s outbox overflows (the moment it
        does, not when the connection is gone: that is what the tests look at)."""
        before = await overflows(http, transport)
        for i in range(400):
            await publish(http, channel, BIG)
            if i % 5 == 4 and await overflows(http, transport) > before:
                return
        raise AssertionError(f"the {transport} client never overflowed")

    @pytest.mark.parametrize("kind", ["ws", "sse", "stream"])
    async def test_a_slow_consumer_that_never_reads_is_cut_within_the_close_timeout(
        self, slow_server: RunningServer, kind: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The farewell (close frame, ``disconnect`` notice) waits behind what the socket holds
        for ``close_timeout`` = min(10 s, ``limits.idle_timeout``); a client that reads none of
        it is then cut: the node forgets it and the server resets the connection, so it holds
        no buffer or file descriptor of the server process, nor bytes in its kernel, and the
        client knows at once (what its own kernel holds aside)."""
        if sys.platform != "linux":
            pytest.skip("reads /proc/net/tcp (Linux)")
        server = slow_server
        channel = channel_name()
        if kind == "ws":
            sock = unread_socket(server.port, ws_upgrade())
            assert sock.recv(4096).startswith(b"HTTP/1.1 101 ")
            sock.sendall(
                client_frame(OP_TEXT, orjson.dumps({"op": "subscribe", "ref": 1, "channel": channel}))
            )
            await wait_until(lambda: server.node.hub.subscriber_count(channel) == 1, "the subscription")
        else:
            sock = unread_socket(server.port, http_get(f"{PATHS[kind]}?channel={channel}"))
            sock.recv(4096)
        with sock:
            async with httpx.AsyncClient(base_url=server.url, timeout=DEADLINE) as http:
                await self._until_slow(http, channel, kind)
            assert server_end_established(server.port, sock)  # the farewell is waiting
            await wait_until(
                lambda: (
                    not server_end_established(server.port, sock)
                    and not client_end_established(sock)
                    and server.node.hub.subscriber_count(channel) == 0
                ),
                "the server to cut the connection",
                deadline=server.settings.limits.idle_timeout + 1.5,
            )
        # a cut is the machine's decision, not a failure (uvicorn logged the ASGI stream's as one)
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []

    # row 4: the WebSocket close-handshake timeout ------------------------------------------------

    async def test_a_client_that_never_answers_the_close_frame_is_cut_after_the_close_timeout(
        self, slow_server: RunningServer
    ) -> None:
        """The server closes (here: 1007 for a frame that is not JSON) and waits for the
        client's close frame at most ``close_timeout`` = min(10 s, ``limits.idle_timeout``)."""
        ws = await RawWS.open(slow_server.port)
        try:
            ws.send(client_frame(OP_TEXT, b"not json"))
            opcode, payload = await ws.data_frame()
            assert (opcode, int.from_bytes(payload[:2], "big")) == (OP_CLOSE, 1007)
            # no answer: the server must not wait for ever (nor 10 s)
            with contextlib.suppress(ConnectionError):
                async with asyncio.timeout(slow_server.settings.limits.idle_timeout + 1.5):
                    assert await ws.reader.read() == b""
        finally:
            ws.close()

    # row 5: a held long poll that ends -----------------------------------------------------------
    # (the client leaving mid-hold: tests/transports/test_http_transports.py)

    @pytest.mark.parametrize("end", ["publication", "timeout", "server"])
    async def test_a_held_long_poll_has_left_the_node_when_its_answer_arrives(
        self, server: RunningServer, http: httpx.AsyncClient, end: str
    ) -> None:
        """Unsubscribe, then answer, on both engines: when the client has the answer (a
        publication, the timeout, the server's disconnect of its user), the hub holds no
        subscriber for the poll and the node no connection."""
        channel = channel_name()
        user = f"poller-{end}"
        node = server.node
        params = {"channel": channel, "timeout": 0.5 if end == "timeout" else DEADLINE}
        held = asyncio.ensure_future(
            http.get("/poll", params=params, headers={"Authorization": f"Bearer {token(user)}"})
        )
        await wait_until(lambda: node.hub.subscriber_count(channel) == 1, "a held poll")
        if end == "publication":
            await publish(http, channel, "wake")
        elif end == "server":
            answer = await http.post("/api/disconnect", json={"user": user})
            assert answer.json()["disconnected"] == 1
        response = await held
        # read at once: both engines leave before they answer
        assert node.hub.subscriber_count(channel) == 0
        assert not any(c.user == user for c in list(node.connections.values()))
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.headers["cache-control"] == "no-cache"
        body = response.json()
        assert set(body) == {"messages", "cursor", "gaps"}
        assert [m["data"] for m in body["messages"]] == (["wake"] if end == "publication" else [])

    # row 6: heartbeats and farewells -------------------------------------------------------------
    # (heartbeat spacing: tests/transports/test_streams.py)

    @pytest.mark.parametrize("kind", STREAMS)
    async def test_a_stream_ends_at_max_duration_with_one_notice(
        self, short_streams: RunningServer, kind: str
    ) -> None:
        """``sse.max_duration``: ready, then one ``disconnect`` (1001, reconnect), then the
        response ends properly (its last chunk)."""
        async with httpx.AsyncClient(base_url=short_streams.url, timeout=DEADLINE) as http:
            items = await stream_items(http, kind, {"channel": channel_name()})
        assert [item["op"] for item in items] == ["ready", "disconnect"]
        assert {k: v for k, v in items[1].items() if k != "op"} == {
            "code": 1001,
            "reason": "stream time limit: reconnect and resume",
            "reconnect": True,
        }

    async def test_a_shutdown_says_goodbye_alike_on_every_transport(self) -> None:
        """The drain: WebSocket close 1012, SSE and NDJSON one ``disconnect`` notice (1012,
        reconnect) and the end of the response, a held long poll answered (no messages)."""
        with self.serve() as server:
            channel = channel_name()
            async with httpx.AsyncClient(base_url=server.url, timeout=DEADLINE) as http:
                ws = await connect(server.ws_url, open_timeout=DEADLINE)
                await ws.send(orjson.dumps({"op": "subscribe", "ref": 1, "channel": channel}).decode())
                streams = {
                    kind: asyncio.ensure_future(stream_items(http, kind, {"channel": channel}))
                    for kind in STREAMS
                }
                poll = asyncio.ensure_future(
                    http.get("/poll", params={"channel": channel, "timeout": DEADLINE})
                )
                await wait_until(lambda: server.node.hub.subscriber_count(channel) == 4, "four subscribers")
                server.server.should_exit = True
                with pytest.raises(ConnectionClosed):
                    while True:
                        await asyncio.wait_for(ws.recv(), DEADLINE)
                items = {kind: await task for kind, task in streams.items()}
                answer = await poll
        assert (ws.close_code, ws.close_reason) == (1012, "service restart: reconnect and resume")
        for kind, got in items.items():
            assert [item["op"] for item in got] == ["ready", "disconnect"], kind
            assert {k: v for k, v in got[1].items() if k != "op"} == {
                "code": 1012,
                "reason": "service restart: reconnect and resume",
                "reconnect": True,
            }, kind
        assert answer.status_code == 200 and answer.json()["messages"] == []

    async def test_a_draining_node_sends_a_new_websocket_away_with_1012(self, server: RunningServer) -> None:
        server.node.draining = True
        try:
            ws = await RawWS.open(server.port)
            assert await ws.close_code() == 1012
        finally:
            server.node.draining = False

    # token expiry --------------------------------------------------------------------------------

    @pytest.mark.parametrize("kind", ["ws", *STREAMS])
    async def test_an_expiring_token_ends_the_connection_with_4001(
        self, server: RunningServer, http: httpx.AsyncClient, kind: str
    ) -> None:
        """A connection opened with a token ends when the token expires: WebSocket close 4001,
        a stream's ``disconnect`` notice 4001 (reconnect with a new token)."""
        channel = channel_name()
        expiring = await soon_expiring_token(f"expiring-{kind}")
        if kind == "ws":
            async with connect(f"{server.ws_url}?token={expiring}", open_timeout=DEADLINE) as ws:
                with pytest.raises(ConnectionClosed):
                    while True:
                        await asyncio.wait_for(ws.recv(), DEADLINE)
            assert (ws.close_code, ws.close_reason) == (4001, "token expired: reconnect with a new token")
            return
        items = await stream_items(http, kind, {"channel": channel, "token": expiring})
        assert [item["op"] for item in items] == ["ready", "disconnect"]
        assert items[1]["code"] == 4001 and items[1]["reconnect"] is True

    # the node's close line ---------------------------------------------------------------------
    # (streams: tests/transports/test_http_transports.py::test_the_close_log_says_who_ended_a_stream)

    @pytest.mark.parametrize(
        ("end", "code", "by"),
        [
            pytest.param("client-close", 1000, "client", id="client-close"),
            pytest.param("client-vanishes", 1006, "client", id="client-vanishes"),
            pytest.param("invalid-json", 1007, "server", id="invalid-json"),
            pytest.param("server-disconnect", 1008, "server", id="server-disconnect"),
        ],
    )
    async def test_the_close_line_of_a_websocket_says_who_ended_it_and_how(
        self,
        server: RunningServer,
        http: httpx.AsyncClient,
        caplog: pytest.LogCaptureFixture,
        end: str,
        code: int,
        by: str,
    ) -> None:
        """One ``close`` line per connection (``tidings.connections``) with the code and who
        closed: a client's close frame, a client gone without one (1006, as RFC 6455 names
        it), the server's close for bad input, the server's disconnect of a user."""
        caplog.set_level(logging.INFO, logger="tidings.connections")
        user = f"closer-{end}"
        ws = await RawWS.open(server.port, f"/ws?token={token(user)}")
        try:
            ws.send(client_frame(OP_TEXT, b'{"op":"ping","ref":1}'))
            assert (await ws.json())["op"] == "pong"
            if end == "client-close":
                ws.send(client_frame(OP_CLOSE, (1000).to_bytes(2, "big")))
                await ws.data_frame()
            elif end == "invalid-json":
                ws.send(client_frame(OP_TEXT, b"not json"))
                await ws.close_code()
            elif end == "server-disconnect":
                assert (await http.post("/api/disconnect", json={"user": user})).json() == {"disconnected": 1}
                await ws.close_code()
        finally:
            ws.close()

        def closes() -> list[dict[str, Any]]:
            return [
                r.fields
                for r in list(caplog.records)  # type: ignore[attr-defined]
                if getattr(r, "fields", {}).get("event") == "close" and r.fields.get("user") == user
            ]  # type: ignore[attr-defined]

        await wait_until(lambda: bool(closes()), "the close line")
        [line] = closes()
        assert (line["transport"], line["code"], line["by"]) == ("ws", code, by), line

    # WebSocket protocol, raw frames --------------------------------------------------------------

    @pytest.mark.parametrize(
        ("wire", "code"),
        [
            pytest.param(client_frame(OP_TEXT, b'{"op":"ping"}', mask=False), 1002, id="unmasked"),
            pytest.param(client_frame(OP_TEXT, b'{"op":"ping"}', rsv=2), 1002, id="rsv"),
            pytest.param(client_frame(5, b""), 1002, id="opcode"),
            pytest.param(client_frame(OP_TEXT, b'{"op":"\xff"}'), 1007, id="utf8"),
            pytest.param(
                client_frame(OP_TEXT, b"\xce", fin=False) + client_frame(OP_CONT, b"A"),
                1007,
                id="utf8-fragment",
            ),
            pytest.param(client_frame(OP_TEXT, b"x" * 5000), 1009, id="too-big"),
            pytest.param(
                client_frame(OP_TEXT, b"x" * 3000, fin=False) + client_frame(OP_CONT, b"x" * 3000),
                1009,
                id="too-big-in-fragments",
            ),
            pytest.param(client_frame(OP_PING, b"p" * 126), 1002, id="long-ping"),
            pytest.param(client_frame(OP_PING, b"p", fin=False), 1002, id="fragmented-ping"),
            pytest.param(client_frame(OP_CONT, b"x"), 1002, id="lone-continuation"),
            pytest.param(
                client_frame(OP_TEXT, b"{", fin=False) + client_frame(OP_TEXT, b"}"),
                1002,
                id="text-inside-a-message",
            ),
            pytest.param(client_frame(OP_CLOSE, b"\x03"), 1002, id="close-1-byte"),
            pytest.param(
                client_frame(OP_CLOSE, (1000).to_bytes(2, "big") + b"\xff"), 1007, id="close-reason-utf8"
            ),
            pytest.param(client_frame(OP_CLOSE, (1005).to_bytes(2, "big")), 1002, id="close-1005"),
            pytest.param(client_frame(OP_BINARY, b"binary"), 1003, id="binary"),
            pytest.param(client_frame(OP_TEXT, b"not json"), 1007, id="not-json"),
        ],
    )
    async def test_a_protocol_violation_closes_with_the_documented_code(
        self, server: RunningServer, wire: bytes, code: int
    ) -> None:
        ws = await RawWS.open(server.port)
        ws.send(wire)
        assert await ws.close_code() == code

    @pytest.mark.parametrize(
        ("headers", "status", "code"),
        [
            pytest.param(
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short", 400, "bad_request", id="bad-key"
            ),
            pytest.param("Sec-WebSocket-Version: 13", 400, "bad_request", id="no-key"),
            pytest.param(
                f"Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: {WS_KEY}",
                426,
                "upgrade_required",
                id="version-8",
            ),
            pytest.param(
                f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {WS_KEY}\r\nOrigin: http://evil.example",
                403,
                "forbidden",
                id="foreign-origin",
            ),
        ],
    )
    async def test_a_refused_upgrade_is_answered_with_a_json_error(
        self, server: RunningServer, headers: str, status: int, code: str
    ) -> None:
        """Bad input gets a clear error, a status and a JSON body, before any upgrade; a version
        other than 13 gets 426 naming the version spoken (RFC 6455 4.4)."""
        conn = await HTTPConnection.open(server.port)
        try:
            conn.send(
                f"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\n{headers}\r\n\r\n".encode()
            )
            got, answer_headers, body = await conn.answer()
        finally:
            await conn.close()
        assert (got, answer_headers.get("content-type")) == (status, "application/json"), body
        assert orjson.loads(body)["error"]["code"] == code
        if status == 426:
            assert answer_headers["sec-websocket-version"] == "13"

    async def test_a_client_close_is_echoed_with_its_code(self, server: RunningServer) -> None:
        ws = await RawWS.open(server.port)
        ws.send(client_frame(OP_CLOSE, (4321).to_bytes(2, "big") + b"bye"))
        assert await ws.close_code() == 4321

    async def test_a_client_ping_gets_a_pong_with_its_payload(self, server: RunningServer) -> None:
        ws = await RawWS.open(server.port)
        try:
            ws.send(client_frame(OP_PING, b"hello"))
            assert await ws.data_frame() == (OP_PONG, b"hello")
        finally:
            ws.close()

    async def test_a_fragmented_command_is_carried_out(self, server: RunningServer) -> None:
        ws = await RawWS.open(server.port)
        try:
            text = b'{"op":"ping","ref":7}'
            ws.send(
                client_frame(OP_TEXT, text[:5], fin=False)
                + client_frame(OP_CONT, text[5:12], fin=False)
                + client_frame(OP_CONT, text[12:])
            )
            assert await ws.json() == {"op": "pong", "ref": 7}
        finally:
            ws.close()

    # HTTP/1.1 connections -------------------------------------------------------------------------

    @pytest.mark.parametrize("kind", ["sse", "stream", "longpoll"])
    async def test_a_push_answer_that_ends_leaves_the_connection_open_for_the_next_request(
        self, short_streams: RunningServer, kind: str
    ) -> None:
        """Keep-alive: a stream ended by the server (``sse.max_duration``, its last chunk) or a
        long poll answered at its timeout, then the next request on the same connection."""
        channel = channel_name()
        path = {"sse": "/sse?", "stream": "/stream?", "longpoll": "/poll?timeout=0.3&"}[kind]
        conn = await HTTPConnection.open(short_streams.port)
        try:
            conn.send(http_get(f"{path}channel={channel}"))
            status, headers, body = await conn.answer()
            conn.send(http_get(f"/poll?channel={channel}&timeout=0"))
            after = await conn.answer()
        finally:
            await conn.close()
        assert status == 200
        if kind == "longpoll":
            assert orjson.loads(body)["messages"] == []
        else:
            assert headers["transfer-encoding"] == "chunked"
            assert b"disconnect" in body and b"1001" in body
        assert after[0] == 200 and "cursor" in orjson.loads(after[2])

    @pytest.mark.parametrize(
        ("path", "expected"),
        [
            (
                "/sse?channel=h",
                {
                    "content-type": "text/event-stream",
                    "cache-control": "no-cache",
                    "x-accel-buffering": "no",
                    "x-content-type-options": "nosniff",
                    "transfer-encoding": "chunked",
                },
            ),
            (
                "/stream?channel=h",
                {
                    "content-type": "application/x-ndjson",
                    "cache-control": "no-cache",
                    "x-accel-buffering": "no",
                    "x-content-type-options": "nosniff",
                    "transfer-encoding": "chunked",
                },
            ),
            (
                "/poll?channel=h&timeout=0.1",
                {"content-type": "application/json", "cache-control": "no-cache", "content-length": "*"},
            ),
            (
                "/poll?channel=h&timeout=0",
                {
                    "content-type": "application/json",
                    "cache-control": "no-cache",
                    "content-length": "*",
                    "etag": "*",
                },
            ),
            ("/sse", {"content-type": "application/json", "content-length": "*"}),
        ],
    )
    async def test_a_push_answer_has_the_same_headers_on_both_engines(
        self, short_streams: RunningServer, path: str, expected: dict[str, str]
    ) -> None:
        """Exactly these headers (``*``: any value), the CORS ones for an allowed origin and a
        request id; nothing one engine adds and the other does not."""
        cors = {
            "access-control-allow-credentials": "true",
            "access-control-allow-origin": "http://t",
            "access-control-expose-headers": "ETag, Retry-After, Content-Type",
            "vary": "Origin",
        }
        conn = await HTTPConnection.open(short_streams.port)
        try:
            conn.send(f"GET {path} HTTP/1.1\r\nHost: t\r\nOrigin: http://t\r\n\r\n".encode())
            _, headers, _ = await conn.answer()
        finally:
            await conn.close()
        assert len(headers.pop("x-request-id")) == 32
        headers.pop("date", None)
        assert {name: "*" if expected.get(name) == "*" else value for name, value in headers.items()} == {
            **expected,
            **cors,
        }

    async def test_pipelined_publishes_and_polls_are_answered_in_order(self, server: RunningServer) -> None:
        """Three publishes and a poll in one write: every answer comes back, in order."""
        channel = channel_name()
        conn = await HTTPConnection.open(server.port)
        try:
            conn.send(http_get(f"/poll?channel={channel}&timeout=0"))
            cursor = orjson.loads((await conn.answer())[2])["cursor"]
            conn.send(
                b"".join(publish_request(channel, i) for i in (1, 2, 3))
                + http_get(f"/poll?channel={channel}&timeout=0&cursor={cursor}")
            )
            offsets = [orjson.loads((await conn.answer())[2])["offset"] for _ in range(3)]
            status, headers, body = await conn.answer()
        finally:
            await conn.close()
        assert offsets == [1, 2, 3]
        assert status == 200 and headers["content-type"] == "application/json"
        assert [m["data"] for m in orjson.loads(body)["messages"]] == [1, 2, 3]

    async def test_a_publish_whose_body_arrives_in_pieces_is_published_once(
        self, server: RunningServer
    ) -> None:
        channel = channel_name()
        raw = publish_request(channel, {"text": "x" * 500})
        conn = await HTTPConnection.open(server.port)
        try:
            for i in range(0, len(raw), 97):
                conn.send(raw[i : i + 97])
                await conn.writer.drain()
                await asyncio.sleep(0.005)
            status, headers, body = await conn.answer()
            conn.send(http_get(f"/poll?channel={channel}&timeout=0"))
            position = orjson.loads((await conn.answer())[2])["cursor"]
        finally:
            await conn.close()
        assert status == 200 and len(headers["x-request-id"]) == 32
        assert orjson.loads(body)["offset"] == 1
        assert cursor_position(position, channel).offset == 1  # published once

    @pytest.mark.parametrize(
        ("request_bytes", "status", "code"),
        [
            pytest.param(
                publish_request("refused", 1, key="wrong-key-0123456789"), 401, "unauthorized", id="wrong-key"
            ),
            pytest.param(
                b"POST /api/publish HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer "
                + API_KEY.encode()
                + b"\r\nContent-Type: application/json\r\n"
                b'Content-Length: 9\r\n\r\n{"data":1',
                400,
                "bad_request",
                id="bad-json",
            ),
            pytest.param(
                b"POST /api/publish HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer "
                + API_KEY.encode()
                + b"\r\nContent-Type: application/json\r\n"
                b"Content-Length: 4000\r\n\r\n" + b" " * 4000,
                413,
                "too_large",
                id="too-large",
            ),
            pytest.param(
                b"POST /api/publish HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer "
                + API_KEY.encode()
                + b"\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
                b'1a\r\n{"channel":"c h","data":1}\r\n0\r\n\r\n',
                400,
                "bad_request",
                id="chunked-bad-channel",
            ),
        ],
    )
    async def test_a_refused_publish_gets_the_api_s_answer_and_publishes_nothing(
        self, request_bytes: bytes, status: int, code: str
    ) -> None:
        with self.serve(api_key=API_KEY, limits={"max_request_bytes": 2048}) as server:
            conn = await HTTPConnection.open(server.port)
            try:
                conn.send(request_bytes)
                got, _, body = await conn.answer()
            finally:
                await conn.close()
            async with httpx.AsyncClient(base_url=server.url, timeout=DEADLINE) as http:
                answer = await http.get("/poll", params={"channel": "refused", "timeout": 0})
        assert cursor_position(answer.json()["cursor"], "refused").offset == 0
        assert got == status, body
        assert orjson.loads(body)["error"]["code"] == code

    # keepalive -----------------------------------------------------------------------------------

    async def test_an_idle_websocket_is_pinged_and_closed_with_1011_if_it_never_answers(
        self, pinging: RunningServer
    ) -> None:
        """Inherent difference: the ASGI engine's pings are uvicorn's (a 4-byte payload, the
        pong awaited ``idle_timeout`` after each ping, an ASGI app sees no pongs); the sockets
        engine's are empty and it closes ``idle_timeout`` after the last byte received, so a
        client that sends commands but never answers a ping stays open there and is closed
        (1011) on the ASGI engine. Common: a ping within ``ping_interval``, then 1011 for a
        client that sends nothing at all (the reasons differ, uvicorn's is its own)."""
        limits = pinging.settings.limits
        ws = await RawWS.open(pinging.port)
        async with asyncio.timeout(limits.ping_interval + 2):
            opcode, _ = await ws.frame()
        assert opcode == OP_PING
        async with asyncio.timeout(limits.ping_interval + limits.idle_timeout + 3):
            assert await ws.close_code() == 1011

    async def test_a_websocket_that_answers_pings_outlives_the_idle_timeout(
        self, pinging: RunningServer
    ) -> None:
        async with connect(pinging.ws_url, open_timeout=DEADLINE) as ws:  # answers pings
            await asyncio.sleep(1.5 * pinging.settings.limits.idle_timeout)
            await ws.send('{"op":"ping","ref":1}')
            assert orjson.loads(await asyncio.wait_for(ws.recv(), DEADLINE)) == {"op": "pong", "ref": 1}

    # permessage-deflate (RFC 7692; issue 19) ----------------------------------------------------
    # (the codec and the negotiation rules: tests/core/wire/test_deflate.py)

    @pytest.mark.parametrize(
        ("offer", "answer", "bits"),
        [
            pytest.param(None, None, None, id="none"),
            pytest.param("permessage-deflate; client_max_window_bits", DEFLATE, 15, id="default"),
            pytest.param(
                "permessage-deflate; client_no_context_takeover", DEFLATE, 15, id="client_no_context_takeover"
            ),
            pytest.param(
                "permessage-deflate; server_no_context_takeover",
                DEFLATE_ALONE,
                15,
                id="server_no_context_takeover",
            ),
            pytest.param(
                "permessage-deflate; server_max_window_bits=10",
                f"{DEFLATE}; server_max_window_bits=10",
                10,
                id="server_max_window_bits",
            ),
            pytest.param(
                "permessage-deflate; client_max_window_bits=9", DEFLATE, 15, id="client_max_window_bits"
            ),
            pytest.param(
                "permessage-deflate; server_max_window_bits=8",
                f"{DEFLATE}; server_max_window_bits=8",
                8,
                id="server_max_window_bits_8",
            ),
            pytest.param("permessage-deflate; bogus, x-other", None, None, id="declined"),
        ],
    )
    async def test_permessage_deflate_negotiation_and_a_compressed_publication(
        self,
        server: RunningServer,
        http: httpx.AsyncClient,
        offer: str | None,
        answer: str | None,
        bits: int | None,
    ) -> None:
        """The negotiation matrix: each offer's answer (server and client without context
        takeover, the window the client asked of the server); then a subscribe, compressed by
        the client when negotiated; a short publication (under ``compression_threshold``) sent
        plain; a long one compressed with the negotiated window (plain at 8 bits, which zlib
        cannot write), inflating to the very message a client without compression gets."""
        channel = channel_name()
        ws = await RawWS.open(server.port, extensions=offer)
        plain = await RawWS.open(server.port)
        try:
            assert ws.extensions == answer
            assert plain.extensions is None
            command = orjson.dumps({"op": "subscribe", "ref": 1, "channel": channel})
            ws.send(
                client_frame(OP_TEXT, raw_deflate(command), rsv=4)
                if answer
                else client_frame(OP_TEXT, command)
            )
            plain.send(client_frame(OP_TEXT, command))
            assert (await ws.json())["op"] == "subscribed"
            assert (await plain.json())["op"] == "subscribed"
            rows = {"rows": [{"id": i, "symbol": "ACME", "price": 100 + i} for i in range(60)]}
            await publish(http, channel, "short", rows)
            for expected in ("short", rows):
                opcode, payload = await ws.data_frame()
                compressed = ws.rsv1
                _, reference = await plain.data_frame()
                assert opcode == OP_TEXT and not plain.rsv1
                if compressed:
                    assert bits is not None and bits >= 9 and expected == rows
                    assert 2 * len(payload) < len(reference)
                    payload = zlib.decompressobj(-bits).decompress(payload + b"\x00\x00\xff\xff")
                assert payload == reference
                assert orjson.loads(payload)["data"] == expected
                assert compressed == (answer is not None and bits != 8 and expected == rows)
        finally:
            ws.close()
            plain.close()

    async def test_a_decompression_bomb_is_closed_with_1009(self, server: RunningServer) -> None:
        """A compressed message of 1 KB that inflates to 1 MB, on a server whose messages may
        be 4 KB (``limits.max_frame_bytes``): closed with 1009; the server serves on."""
        bomb = raw_deflate(b"a" * 1_000_000)
        assert len(bomb) < server.settings.limits.max_frame_bytes
        ws = await RawWS.open(server.port, extensions="permessage-deflate")
        ws.send(client_frame(OP_TEXT, bomb, rsv=4))
        assert await ws.close_code() == 1009
        # fragmented, each frame small: the bound is the message's
        ws = await RawWS.open(server.port, extensions="permessage-deflate")
        ws.send(client_frame(OP_TEXT, bomb[:500], fin=False, rsv=4) + client_frame(OP_CONT, bomb[500:]))
        assert await ws.close_code() == 1009
        ws = await RawWS.open(server.port, extensions="permessage-deflate")
        ws.send(client_frame(OP_TEXT, raw_deflate(b'{"op":"ping","ref":7}'), rsv=4))
        assert (await ws.json()) == {"op": "pong", "ref": 7}
        ws.close()

    @pytest.mark.parametrize(
        "frames",
        [
            pytest.param(client_frame(OP_TEXT, b"\xff\xff\xff\xff", rsv=4), id="invalid-deflate-data"),
            pytest.param(
                client_frame(OP_TEXT, b"\xf2", fin=False, rsv=4) + client_frame(OP_CONT, b"\x00", rsv=4),
                id="rsv1-on-a-continuation",
            ),
            pytest.param(client_frame(OP_PING, b"", rsv=4), id="rsv1-on-a-ping"),
            pytest.param(client_frame(OP_TEXT, b"\xf2", rsv=2), id="rsv2"),
        ],
    )
    async def test_invalid_compressed_frames_close_with_1002(
        self, server: RunningServer, frames: bytes
    ) -> None:
        """Compressed data that does not inflate, RSV1 where RFC 7692 does not put it (a
        continuation, a control frame) and the other reserved bits: 1002."""
        ws = await RawWS.open(server.port, extensions="permessage-deflate")
        ws.send(frames)
        assert await ws.close_code() == 1002

    async def test_wire_stats_are_the_bytes_written_for_each_publication(
        self, server: RunningServer, http: httpx.AsyncClient
    ) -> None:
        """``wire_stats`` (what the transport lab shows): each publication's frame as the client
        read it off the socket, compressed (chained ones included) or not, byte for byte; a
        first ask starts counting, each ask takes what came since. Under an ASGI server the
        server compresses out of tidings' sight: not counted, said so."""
        channel = channel_name()
        ws = await RawWS.open(server.port, extensions="permessage-deflate")
        window = zlib.decompressobj(-15)  # the server keeps its context: so does the client

        def frame_size(payload: bytes) -> int:
            return (2 if len(payload) < 126 else 4 if len(payload) < 65536 else 10) + len(payload)

        async def message() -> tuple[int, int, bool, dict[str, Any]]:
            """The next text message: its frame's size (header included), that of the same
            message uncompressed, RSV1, its JSON."""
            while True:
                opcode, payload = await ws.frame()
                if opcode == OP_TEXT:
                    break
            compressed = ws.rsv1
            text = window.decompress(payload + b"\x00\x00\xff\xff") if compressed else payload
            return frame_size(payload), frame_size(text), compressed, orjson.loads(text)

        async def ask(ref: int) -> dict[str, Any]:
            ws.send(client_frame(OP_TEXT, orjson.dumps({"op": "wire_stats", "ref": ref})))
            *_, answer = await message()
            assert (answer["op"], answer["ref"]) == ("wire_stats", ref)
            return answer

        counted = self.engine == "sockets"
        assert await ask(1) == {"op": "wire_stats", "ref": 1, "counted": counted, "messages": []}
        ws.send(client_frame(OP_TEXT, orjson.dumps({"op": "subscribe", "ref": 2, "channel": channel})))
        assert (await message())[3]["op"] == "subscribed"
        feed = [{"rows": [{"id": i, "price": 100.25 + i + n} for i in range(40)]} for n in range(4)]
        feed.append({"n": 1})  # too short to compress
        offsets = await publish(http, channel, *feed)
        seen = [await message() for _ in feed]
        assert [m[3]["offset"] for m in seen] == offsets
        assert [m[2] for m in seen] == [True] * 4 + [False]
        answer = await ask(3)
        if not counted:
            assert answer["messages"] == []
            ws.close()
            return
        assert answer["messages"] == [
            {
                "channel": channel,
                "offset": offset,
                "wire": size,
                "uncompressed": plain,
                "full": plain,
                "compressed": compressed,
                "delta": False,
            }
            for offset, (size, plain, compressed, _) in zip(offsets, seen, strict=True)
        ]
        assert all(m["wire"] < m["full"] for m in answer["messages"][:4])
        assert (await ask(4))["messages"] == []  # taken by the last ask
        ws.close()

    async def test_libraries_read_compressed_publications(
        self, server: RunningServer, http: httpx.AsyncClient
    ) -> None:
        """Python ``websockets`` (which offers permessage-deflate by default) reads a compressed
        publication and a compressed history reply; its commands arrive compressed too."""
        channel = channel_name()
        data = {"text": "tidings " * 500}
        async with connect(server.ws_url, open_timeout=DEADLINE) as ws:
            assert [e.name for e in ws.protocol.extensions] == ["permessage-deflate"]
            await ws.send(orjson.dumps({"op": "subscribe", "ref": 1, "channel": channel}).decode())
            assert orjson.loads(await asyncio.wait_for(ws.recv(), DEADLINE))["op"] == "subscribed"
            await publish(http, channel, data)
            message = orjson.loads(await asyncio.wait_for(ws.recv(), DEADLINE))
            assert message["op"] == "message" and message["data"] == data
            await ws.send(orjson.dumps({"op": "history", "ref": 2, "channel": channel}).decode())
            history = orjson.loads(await asyncio.wait_for(ws.recv(), DEADLINE))
            assert [p["data"] for p in history["publications"]] == [data]
            # consecutive publications (chained on the sockets engine) read by the library
            feed = [{"text": "tidings " * 500, "n": n} for n in range(5)]
            for item in feed:
                await publish(http, channel, item)
            for item in feed:
                assert orjson.loads(await asyncio.wait_for(ws.recv(), DEADLINE))["data"] == item

    async def test_consecutive_publications_are_read_whole_by_clients_that_keep_their_window(
        self, server: RunningServer, http: httpx.AsyncClient
    ) -> None:
        """A feed of ~1 KB tickers that change a few fields: a client that keeps its inflate
        window (what tidings' answer lets every client do) reads each message exactly as a client
        without compression does, replies in between included. On the sockets engine a
        publication after the channel's previous one refers to it (one chained frame per
        publication, shared): the feed's messages then take under a third of their plain bytes
        (the ASGI engine compresses each message alone: see docs/topics/engines.md)."""
        channel = channel_name()
        ws = await RawWS.open(server.port, extensions="permessage-deflate; client_max_window_bits")
        plain = await RawWS.open(server.port)
        inflater = zlib.decompressobj(-15)  # the client's window, kept from message to message
        try:
            assert ws.extensions == DEFLATE
            for raw in (ws, plain):
                raw.send(
                    client_frame(OP_TEXT, orjson.dumps({"op": "subscribe", "ref": 1, "channel": channel}))
                )
            for raw in (ws, plain):
                assert (await raw.json())["op"] == "subscribed"
            wire = plain_bytes = 0
            for i in range(12):
                if i == 6:  # a compressed reply between two publications
                    command = orjson.dumps({"op": "history", "ref": 2, "channel": channel, "limit": 1})
                    ws.send(client_frame(OP_TEXT, command))
                    _, payload = await ws.data_frame()
                    assert ws.rsv1
                    assert orjson.loads(inflater.decompress(payload + b"\x00\x00\xff\xff"))["op"] == "history"
                book = [[100 - j / 4, 10 * j + (i if j == 3 else 0)] for j in range(40)]
                await publish(http, channel, {"sym": "ACME", "seq": i, "last": 100 + i / 8, "book": book})
                _, reference = await plain.data_frame()
                _, payload = await ws.data_frame()
                if ws.rsv1:
                    wire, plain_bytes = wire + len(payload), plain_bytes + len(reference)
                    payload = inflater.decompress(payload + b"\x00\x00\xff\xff")
                assert payload == reference
            if self.engine == "sockets":
                assert wire * 3 < plain_bytes, (wire, plain_bytes)
        finally:
            ws.close()
            plain.close()

    async def test_compression_follows_the_settings(self) -> None:
        """``websocket.compression = false``: the offer is declined; ``compression_threshold``
        decides which messages are compressed."""
        with self.serve(websocket={"compression": False}) as off:
            ws = await RawWS.open(off.port, extensions="permessage-deflate")
            assert ws.extensions is None
            ws.close()
        channel = "t:" + "a" * 100  # the reply is about 170 bytes, and compressible
        command = client_frame(OP_TEXT, orjson.dumps({"op": "subscribe", "ref": 1, "channel": channel}))
        with self.serve(websocket={"compression_threshold": 0}) as eager, self.serve() as default:
            for running, compressed in ((eager, True), (default, False)):
                ws = await RawWS.open(running.port, extensions="permessage-deflate")
                assert ws.extensions == DEFLATE
                ws.send(command)
                _, payload = await ws.data_frame()
                assert ws.rsv1 == compressed
                if compressed:
                    payload = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
                assert orjson.loads(payload)["channel"] == channel
                ws.close()

    async def test_node_ws_reads_a_compressed_publication(
        self, server: RunningServer, http: httpx.AsyncClient
    ) -> None:
        """Node's ``ws`` (perMessageDeflate) negotiates tidings' answer and reads compressed
        publications whole, consecutive ones (chained) included."""
        module = node_ws()
        channel = channel_name()
        feed = [
            {"rows": [{"id": i, "symbol": "ACME", "price": 100.5 + i + n} for i in range(150)]}
            for n in range(4)
        ]
        node = await asyncio.create_subprocess_exec(
            "node",
            "-e",
            NODE_SUBSCRIBER,
            str(module),
            server.ws_url,
            channel,
            str(len(feed)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(DEADLINE):
                assert node.stdout is not None
                assert orjson.loads(await node.stdout.readline()) == {"client_no_context_takeover": True}
                assert orjson.loads(await node.stdout.readline())["op"] == "subscribed"
                for data in feed:  # consecutive: chained on the sockets engine
                    [offset] = await publish(http, channel, data)
                    message = orjson.loads(await node.stdout.readline())
                    assert (message["op"], message["offset"], message["data"]) == ("message", offset, data)
                assert await node.wait() == 0
        finally:
            if node.returncode is None:
                node.kill()
                await node.wait()
