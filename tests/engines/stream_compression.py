"""Compressed HTTP streams (issue 19, item 4), part of the engine conformance suite: the tests
of :class:`StreamCompression` run on both engines through :class:`EngineConformance`.

``sse.compression`` on, a client whose ``Accept-Encoding`` allows gzip or deflate gets a
``Content-Encoding`` body in which every event (ready, publications, gaps, heartbeats, the
farewell) can be decoded as soon as it arrives: read here with our own decoder over the raw
body (nothing else is sent that would push an event out), with httpx's transparent decoding,
with ``curl --compressed`` and with Chromium's EventSource.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import os
import shutil
import socket
import zlib
from collections.abc import Iterator
from typing import Any, ClassVar

import httpx
import orjson
import pytest

import tidings
from tests.serving import RunningServer, serve
from tests.transports.readers import channel_name, dechunk, publish, wait_until
from tidings.core.cursor import encode_token
from tidings.core.position import Position

__all__ = ["StreamCompression"]

DEADLINE = 10.0
PATHS = {"sse": "/sse", "stream": "/stream"}
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WBITS = {"gzip": 31, "deflate": 15}
COMPRESSED = {"compression": True, "heartbeat": 0.4}


class Decoded:
    """A compressed stream read raw and decoded as it comes, one chunk at a time."""

    def __init__(self, response: httpx.Response, coding: str) -> None:
        self.raw = response.aiter_raw()
        self.inflater = zlib.decompressobj(WBITS[coding])
        self.text = b""
        self.wire = b""

    async def until(self, needle: bytes) -> bytes:
        """Read until the decoded text holds ``needle``; what was decoded so far."""
        async with asyncio.timeout(DEADLINE):
            while needle not in self.text:
                chunk = await anext(self.raw)
                self.wire += chunk
                self.text += self.inflater.decompress(chunk)
        return self.text


def stream_ended(body: bytes, kind: str) -> list[dict[str, Any]]:
    """The notices and publications of a whole decoded body (heartbeats left out)."""
    if kind == "stream":
        lines = [orjson.loads(line) for line in body.splitlines() if line]
        return [item for item in lines if item.get("op") != "heartbeat"]
    found = []
    for block in body.decode().split("\n\n"):
        event, data = "message", None
        for line in block.splitlines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data = orjson.loads(line.removeprefix("data: "))
        if data is not None:
            found.append({"op": event, **data} if event != "message" else data)
    return found


class StreamCompression:
    """``sse.compression`` on /sse and /stream (see the module docstring)."""

    engine: ClassVar[str]

    @pytest.fixture(scope="class")
    @classmethod
    def compressing(cls) -> Iterator[RunningServer]:
        """Compression on, a heartbeat every 0.4 s."""
        with serve(engine=cls.engine, sse=COMPRESSED) as running:
            yield running

    @pytest.mark.parametrize("coding", ["gzip", "deflate"])
    @pytest.mark.parametrize("kind", ["sse", "stream"])
    async def test_every_event_of_a_compressed_stream_can_be_read_as_soon_as_it_is_sent(
        self, compressing: RunningServer, kind: str, coding: str
    ) -> None:
        """The ready notice, a publication, a heartbeat and a gap each decode from what has
        arrived, with nothing after them to push them out: each is flushed at once."""
        channel = channel_name()
        stale = encode_token(channel, Position("another-epoch", 3))  # history cannot cover it
        headers = {"accept-encoding": coding}
        async with (
            httpx.AsyncClient(base_url=compressing.url, timeout=DEADLINE) as http,
            http.stream(
                "GET", PATHS[kind], params={"channel": channel, "cursor": stale}, headers=headers
            ) as r,
        ):
            assert r.status_code == 200
            assert r.headers["content-encoding"] == coding
            assert r.headers["vary"].lower() == "accept-encoding"
            body = Decoded(r, coding)
            await body.until(b"ready")
            assert body.wire[:2] == (b"\x1f\x8b" if coding == "gzip" else b"\x78\x9c")
            await body.until(b"gap")  # the notice of what history could not cover
            await publish(http, channel, {"price": 42.5, "symbol": "ACME"})
            text = await body.until(b'"symbol":"ACME"}')
            await body.until(b"heartbeat")  # an idle stream's beat goes through the coder
        items = stream_ended(text, kind)
        ops = [item.get("op") for item in items]
        assert ops == ["ready", "gap", None], items
        assert items[2]["data"] == {"price": 42.5, "symbol": "ACME"}

    @pytest.mark.parametrize("kind", ["sse", "stream"])
    async def test_httpx_reads_a_compressed_stream_of_several_channels_and_its_trailer_checks(
        self, kind: str
    ) -> None:
        """httpx asks for gzip by default and decodes as it reads; a stream over two channels
        (every event its own, with the stream's cursor) ended by the server (``max_duration``)
        ends with a trailer whose CRC-32 and length check."""
        a, b = channel_name(), channel_name()
        settings = {**COMPRESSED, "max_duration": 1.5}
        with serve(engine=self.engine, sse=settings) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=DEADLINE) as http:
                params = [("channel", a), ("channel", b)]
                async with http.stream("GET", PATHS[kind], params=params) as r:
                    assert r.headers["content-encoding"] == "gzip"
                    wire = b""
                    plain = zlib.decompressobj(31)
                    async with asyncio.timeout(DEADLINE):
                        async for chunk in r.aiter_raw():
                            if not wire:  # the ready notice is out: publish
                                await publish(http, a, "to a")
                                await publish(http, b, "to b")
                            wire += chunk
                            plain.decompress(chunk)
        assert plain.eof  # the last block and the trailer came, and nothing after them
        items = stream_ended(gzip.decompress(wire), kind)  # raises if the CRC or length is wrong
        assert [item.get("op") for item in items] == ["ready", None, None, "disconnect"]
        assert [item["data"] for item in items[1:3]] == ["to a", "to b"]
        assert all("cursor" in item for item in items[1:3])

    @pytest.mark.parametrize("kind", ["sse", "stream"])
    async def test_a_compressed_stream_that_is_not_read_ends_with_a_body_that_checks(self, kind: str) -> None:
        """A client that stops reading: its stream is ended as a slow consumer (4008) with the
        events it could not take dropped; what it then reads is a whole gzip body whose
        trailer checks (it counts what was sent, not what was dropped)."""
        channel = channel_name()
        settings = {"compression": True}
        limits = {"outbox_bytes": 65536}
        with serve(engine=self.engine, sse=settings, limits=limits, flow={"enabled": False}) as server:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(DEADLINE)
            sock.connect(("127.0.0.1", server.port))
            request = f"GET {PATHS[kind]}?channel={channel} HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n"
            sock.sendall(request.encode() + b"\r\n")
            with sock:
                received = sock.recv(4096)  # the head and the ready notice; then nothing is read
                async with httpx.AsyncClient(base_url=server.url, timeout=DEADLINE) as http:
                    for _ in range(400):  # incompressible: 60 KB of random base64 each
                        await publish(http, channel, base64.b64encode(os.urandom(45_000)).decode())
                        if server.node.connection_counts().get(kind, 0) == 0:
                            break
                async with asyncio.timeout(DEADLINE):
                    while not received.endswith(b"\r\n0\r\n\r\n") and (
                        chunk := await asyncio.to_thread(sock.recv, 1 << 20)
                    ):
                        received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        assert b"content-encoding: gzip" in head.lower(), head
        assert received.endswith(b"\r\n0\r\n\r\n"), received[-200:]
        items = stream_ended(gzip.decompress(dechunk(body)), kind)  # checks the CRC and length
        assert items[0]["op"] == "ready"
        assert items[-1]["op"] == "disconnect" and items[-1]["code"] == 4008, items[-1]
        assert len(items) < 100  # most were dropped

    @pytest.mark.parametrize("kind", ["sse", "stream"])
    async def test_the_python_client_reads_a_compressed_stream(
        self, compressing: RunningServer, kind: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``tidings.Client`` (httpx underneath: it asks for gzip) gets the publications of a
        compressed stream as from a plain one, consecutive ones chained to each other."""
        channel = channel_name()
        encodings: list[str] = []
        plain_init = httpx.AsyncClient.__init__

        async def record(response: httpx.Response) -> None:
            if response.url.path == PATHS[kind]:
                encodings.append(response.headers.get("content-encoding", ""))

        def init(client: httpx.AsyncClient, *args: Any, **kwargs: Any) -> None:
            plain_init(client, *args, event_hooks={"response": [record]}, **kwargs)

        monkeypatch.setattr(httpx.AsyncClient, "__init__", init)
        async with tidings.Client(compressing.url, transport=kind) as client:
            subscription = client.subscribe(channel)
            await wait_until(
                lambda: compressing.node.connection_counts().get(kind, 0) > 0, "the stream to open"
            )
            async with httpx.AsyncClient(base_url=compressing.url, timeout=DEADLINE) as http:
                await publish(http, channel, *({"n": n, "pad": "tick " * 40} for n in range(5)))
            got = []
            async with asyncio.timeout(DEADLINE):
                async for item in subscription:
                    got.append(item.data)  # type: ignore[union-attr]
                    if len(got) == 5:
                        break
        assert [item["n"] for item in got] == list(range(5))
        assert encodings == ["gzip"]

    @pytest.mark.parametrize(
        ("accept", "setting"), [(None, True), ("identity", True), ("br", True), ("gzip", False)]
    )
    async def test_a_stream_is_not_compressed_unless_both_the_client_and_the_setting_allow_it(
        self, accept: str | None, setting: bool
    ) -> None:
        with serve(engine=self.engine, sse={"compression": setting}) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=DEADLINE) as http:
                http.headers.pop("accept-encoding")
                headers = {} if accept is None else {"accept-encoding": accept}
                async with http.stream(
                    "GET", "/sse", params={"channel": channel_name()}, headers=headers
                ) as r:
                    first = await anext(r.aiter_raw())
                    assert "content-encoding" not in r.headers
                    assert ("vary" in r.headers) is setting
        assert first.startswith(b"retry: ")

    @pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
    @pytest.mark.parametrize("kind", ["sse", "stream"])
    async def test_curl_compressed_reads_a_whole_compressed_stream(self, kind: str) -> None:
        """``curl --compressed`` (which checks the body as it decodes it) reads a stream the
        server ends after 1.5 s, a publication in the middle, and exits 0."""
        channel = channel_name()
        with serve(engine=self.engine, sse={**COMPRESSED, "max_duration": 1.5}) as server:
            curl = await asyncio.create_subprocess_exec(
                "curl", "-sSN", "--compressed", "--max-time", str(DEADLINE), "-D", "-",
                f"{server.url}{PATHS[kind]}?channel={channel}",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            async with httpx.AsyncClient(base_url=server.url, timeout=DEADLINE) as http:
                await asyncio.sleep(0.5)
                await publish(http, channel, "via curl")
            out, err = await asyncio.wait_for(curl.communicate(), DEADLINE)
        assert curl.returncode == 0, err
        head, _, body = out.partition(b"\r\n\r\n")
        assert b"content-encoding: gzip" in head.lower()
        items = stream_ended(body, kind)
        assert [item.get("op") for item in items] == ["ready", None, "disconnect"], body
        assert items[1]["data"] == "via curl"

    @pytest.mark.browser
    @pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason=f"needs Debian's Chromium at {CHROMIUM}")
    async def test_chromium_s_eventsource_gets_each_compressed_event_before_the_next_is_sent(
        self, compressing: RunningServer
    ) -> None:
        """Chromium offers gzip, deflate, br and zstd: it gets gzip, and each publication is
        handed to the page while the next is not yet published, by its EventSource on /sse
        and by a fetch stream read line by line on /stream."""
        playwright = pytest.importorskip("playwright.async_api")
        channel = channel_name()
        async with playwright.async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
            try:
                page = await browser.new_page()
                encodings: list[str] = []
                page.on(
                    "response",
                    lambda r: (
                        encodings.append(r.headers.get("content-encoding", ""))
                        if "/sse" in r.url or "/stream" in r.url
                        else None
                    ),
                )
                await page.goto(f"{compressing.url}/healthz")  # same origin as the stream
                await page.evaluate(
                    """(url) => {
                        window.__log = []; window.__ready = 0;
                        const source = new EventSource(url);
                        source.addEventListener("ready", () => { window.__ready += 1; });
                        source.onmessage = (event) => { window.__log.push(JSON.parse(event.data).data); };
                        window.__lines = []; window.__streamReady = 0;
                        (async () => {
                            const response = await fetch(url.replace("/sse", "/stream"));
                            const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
                            let buffer = "";
                            for (;;) {
                                const { value, done } = await reader.read();
                                if (done) return;
                                buffer += value;
                                let end;
                                while ((end = buffer.indexOf("\\n")) >= 0) {
                                    const item = JSON.parse(buffer.slice(0, end));
                                    buffer = buffer.slice(end + 1);
                                    if (item.op === "ready") window.__streamReady += 1;
                                    else if (!item.op) window.__lines.push(item.data);
                                }
                            }
                        })();
                    }""",
                    f"/sse?channel={channel}",
                )
                await page.wait_for_function(
                    "window.__ready === 1 && window.__streamReady === 1", timeout=DEADLINE * 1000
                )
                async with httpx.AsyncClient(base_url=compressing.url, timeout=DEADLINE) as http:
                    for n in range(1, 6):
                        await publish(http, channel, {"n": n, "pad": "tick " * 50})
                        await page.wait_for_function(
                            f"window.__log.length === {n} && window.__lines.length === {n}",
                            timeout=DEADLINE * 1000,
                        )
                log = await page.evaluate("window.__log.map((d) => d.n)")
                lines = await page.evaluate("window.__lines.map((d) => d.n)")
            finally:
                await browser.close()
        assert log == lines == [1, 2, 3, 4, 5]
        assert encodings == ["gzip", "gzip"]
