"""SSE conformance: the WHATWG EventSource processing model, three readers side by side.

1. A fixed event stream full of edge cases (BOM, CR / LF / CRLF line ends, multi-line data,
   comments, ``retry:`` good and bad, ``id`` persistence, an empty ``id`` resetting it, an ``id``
   with NUL ignored, empty data fields, unicode and emoji, a 100,000-byte line, an unterminated
   event at EOF) is read by Chromium's EventSource (the reference), by httpx-sse (an independent
   parser) and by tidings' own ``SSEParser`` (what the Python client uses). Each must produce the
   events the spec says, which are also written out here by hand.
2. tidings' ``/sse`` output is read by Chromium and by httpx-sse: publications whose data holds
   newlines, CRs, unicode, emoji, U+2028 and long strings come out intact, and the browser's
   reconnection resumes with ``Last-Event-ID`` (id persistence) without loss or repeats.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from tests.serving import RunningServer, serve
from tidings.core.wire.sse import SSEParser

LONG = "x" * 100_000
STREAM = b"".join(
    [
        b"\xef\xbb\xbfretry: 200\n\n",
        b": a comment, ignored\n\n",
        b"id: 1\ndata: hello\n\n",
        b"id: 2\r\ndata: crlf\r\n\r\n",
        b"id: 3\rdata: cr\r\r",
        b"data: line1\ndata: line2\n\n",  # multi-line data; the id stays 3
        b"data:nospace\n\n",
        b"data:  two\n\n",  # only one space is stripped
        b"event: custom\nid: 5\ndata: named\n\n",
        b"data\n\n",  # a field with no colon: empty data, dispatched
        b"data:\n\n",  # an empty data field, dispatched
        b"\n",  # a blank line with no data: nothing
        b"id: 6\nretry: abc\n\n",  # no data: nothing, but the id is now 6
        b"data: after-id\n\n",
        b"id: a\x00b\ndata: nul-id\n\n",  # an id with NUL is ignored: still 6
        b"id\ndata: reset\n\n",  # an empty id resets the last event id
        "data: 😀 ünïcödé \u2028 ☃\n\n".encode(),
        b"data: " + LONG.encode() + b"\n\n",
        b"event: done\ndata: end\n\n",
        b"data: incomplete",  # no blank line before EOF: discarded
    ]
)
EXPECTED = [
    ("message", "hello", "1"),
    ("message", "crlf", "2"),
    ("message", "cr", "3"),
    ("message", "line1\nline2", "3"),
    ("message", "nospace", "3"),
    ("message", " two", "3"),
    ("custom", "named", "5"),
    ("message", "", "5"),
    ("message", "", "5"),
    ("message", "after-id", "6"),
    ("message", "nul-id", "6"),
    ("message", "reset", ""),
    ("message", "😀 ünïcödé \u2028 ☃", ""),
    ("message", LONG, ""),
    ("done", "end", ""),
]
# httpx-sse 0.4 differs from the spec (and from Chromium) in one way, pinned here so a change is
# noticed: a blank line dispatches an event even with no data once an id (or retry) has been set,
# where the spec dispatches nothing (two extra empty events: after "5", and at "id: 6").
EXPECTED_HTTPX_SSE = [*EXPECTED[:9], ("message", "", "5"), ("message", "", "6"), *EXPECTED[9:]]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

PAGE = """<!doctype html><meta charset="utf-8"><script>
window.__log = []; window.__done = false;
const es = new EventSource(%(url)s);
function log(e) {
  window.__log.push({type: e.type, data: e.data, id: e.lastEventId});
  if (window.__log.length >= %(count)d) { es.close(); window.__done = true; }
}
es.onmessage = log;
for (const name of %(events)s) es.addEventListener(name, log);
window.__errors = 0;
es.onerror = () => { window.__errors++; if (es.readyState === 2) window.__done = true; };
</script>"""


# a tiny loopback HTTP server for the fixed stream and the pages ---------------------------------


class PageServer:
    """A loopback HTTP server in a thread: fixed routes, and ``/sse`` passed through to
    ``upstream`` (a tidings node) so a page and its event stream share one origin. ``cut()``
    aborts every passed-through connection, as a network drop would; ``seen`` records every
    request's path and headers."""

    def __init__(self, routes: dict[str, tuple[str, bytes]], upstream: int | None) -> None:
        self.routes = routes
        self.upstream = upstream
        self.seen: list[dict[str, str]] = []
        self.port = 0
        self._ready = threading.Event()
        self._links: set[asyncio.StreamWriter] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._ready.set()
        await self._stop.wait()
        server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        path = lines[0].split(" ")[1].split("?")[0]
        self.seen.append(
            {
                "path": path,
                **{k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)},
            }
        )
        if path == "/sse" and self.upstream is not None:
            await self._pass_through(head, writer)
            return
        content_type, body = self.routes.get(path, ("text/plain", b""))
        status = b"200 OK" if path in self.routes else b"404 Not Found"
        writer.write(
            b"HTTP/1.1 "
            + status
            + b"\r\nContent-Type: "
            + content_type.encode()
            + b"\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n"
        )
        for i in range(0, len(body), 4096):  # in pieces, so line ends fall across reads
            writer.write(body[i : i + 4096])
            await writer.drain()
        writer.close()

    async def _pass_through(self, head: bytes, writer: asyncio.StreamWriter) -> None:
        assert self.upstream is not None
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        up_writer.write(head)
        self._links.update((writer, up_writer))
        try:
            while chunk := await up_reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            for w in (writer, up_writer):
                self._links.discard(w)
                w.transport.abort()

    def cut(self) -> None:
        def abort() -> None:
            for w in list(self._links):
                w.transport.abort()

        assert self._loop is not None
        self._loop.call_soon_threadsafe(abort)

    def __enter__(self) -> PageServer:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@contextmanager
def page_server(
    routes: dict[str, tuple[str, bytes]], upstream: int | None = None
) -> Iterator[tuple[int, list[dict[str, str]]]]:
    with PageServer(routes, upstream) as server:
        yield server.port, server.seen


def chromium_events(url: str, timeout_ms: int = 20000) -> tuple[str, list[tuple[str, str, str]]]:
    """Open ``url`` in headless Chromium; returns (browser version, the page's event log)."""
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with playwright.sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=FLAGS
        )
        try:
            page = context.new_page()
            page.goto(url)
            page.wait_for_function("window.__done === true", timeout=timeout_ms)
            log = page.evaluate("window.__log")
            version = context.browser.version if context.browser else "?"
        finally:
            context.close()
    return version, [(e["type"], e["data"], e["id"]) for e in log]


def needs_chromium() -> None:
    if not shutil.which("chromium") and not shutil.which("/usr/bin/chromium"):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")


def page(url: str, count: int, events: list[str]) -> bytes:
    return (PAGE % {"url": json.dumps(url), "count": count, "events": json.dumps(events)}).encode()


# 1. the fixed stream -----------------------------------------------------------------------------


def test_tidings_sse_parser_reads_the_edge_case_stream_as_the_spec_says():
    for size in (1, 2, 3, 7, 4096, len(STREAM)):  # any chunking: line ends split across feeds
        parser = SSEParser()
        events = []
        for i in range(0, len(STREAM), size):
            events += [(m.event, m.data, m.last_event_id) for m in parser.feed(STREAM[i : i + size])]
        assert events == EXPECTED, size
        assert parser.retry == 200


async def test_httpx_sse_reads_the_edge_case_stream_as_the_spec_says_but_for_its_known_deviation():
    httpx_sse = pytest.importorskip("httpx_sse", reason="httpx-sse is not installed")
    with page_server({"/raw": ("text/event-stream", STREAM)}) as (port, _):
        async with (
            httpx.AsyncClient() as http,
            httpx_sse.aconnect_sse(http, "GET", f"http://127.0.0.1:{port}/raw") as source,
        ):
            events = [(e.event, e.data, e.id) async for e in source.aiter_sse()]
    assert events == EXPECTED_HTTPX_SSE


@pytest.mark.browser
def test_chromium_event_source_reads_the_edge_case_stream_as_the_spec_says():
    needs_chromium()
    routes = {
        "/raw": ("text/event-stream", STREAM),
        "/": ("text/html", page("/raw", len(EXPECTED), ["custom", "done"])),
    }
    with page_server(routes) as (port, seen):
        version, events = chromium_events(f"http://127.0.0.1:{port}/")
    assert events == EXPECTED, version
    raw = [r for r in seen if r["path"] == "/raw"]
    assert raw[0]["accept"] == "text/event-stream"
    assert "last-event-id" not in raw[0]


# 2. tidings' /sse -------------------------------------------------------------------------------

DATA = [
    "line one\nline two\r\nline three\rline four",
    "😀 ünïcödé ☃ 日本語 \u2028 \u2029 \x00 \x7f",
    "",
    {"nested": ["a\nb", {"c": "d\r"}], "n": 1.5, "t": True, "z": None},
    "data: looks like a field\n\nid: 99\nevent: gap",
    "y" * 60_000,
]


def sse_served(server: RunningServer) -> bool:
    with httpx.stream("GET", f"{server.url}/sse", params={"channel": "probe"}, timeout=5) as r:
        return r.status_code != 404


@contextmanager
def sse_server() -> Iterator[RunningServer]:
    with serve(sse={"retry_ms": 100, "heartbeat": 1.0}, limits={"max_message_bytes": 131072}) as server:
        assert sse_served(server), "/sse is not served (404)"
        yield server


def published(events: list[Any]) -> list[Any]:
    """The publications among httpx-sse's events (it also dispatches the data-less ``retry:``
    block that opens the stream, as an empty ``message``: its known deviation)."""
    return [e for e in events if e.event == "message" and e.data]


async def test_httpx_sse_reads_tidings_publications_intact():
    httpx_sse = pytest.importorskip("httpx_sse", reason="httpx-sse is not installed")
    with sse_server() as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
            events: list[Any] = []

            async def read() -> None:
                async with httpx_sse.aconnect_sse(http, "GET", "/sse", params={"channel": "conf"}) as source:
                    async for event in source.aiter_sse():
                        events.append(event)
                        if event.event == "ready":
                            ready.set()
                        if len(published(events)) == len(DATA):
                            return

            ready = asyncio.Event()
            reader = asyncio.get_running_loop().create_task(read())
            await asyncio.wait_for(ready.wait(), 10)
            for item in DATA:
                response = await http.post("/api/publish", json={"channel": "conf", "data": item})
                assert response.status_code == 200, response.text
            await asyncio.wait_for(reader, 20)
    messages = published(events)
    assert [json.loads(e.data)["data"] for e in messages] == DATA
    for event in messages:  # the id is the publication's cursor, also inside the JSON
        assert event.id == json.loads(event.data)["cursor"]


@pytest.mark.browser
def test_chromium_reads_tidings_publications_intact_and_resumes_with_last_event_id():
    """Half the data is published, the connection is cut, the rest is published while the
    browser is away: it reconnects with Last-Event-ID (the last cursor it saw) and gets the rest,
    each publication once, in order."""
    needs_chromium()
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with (
        sse_server() as server,
        PageServer(
            {"/": ("text/html", page("/sse?channel=conf", 10_000, ["ready"]))}, upstream=server.port
        ) as front,
        httpx.Client(base_url=server.url, timeout=10) as http,
        playwright.sync_playwright() as p,
        tempfile.TemporaryDirectory() as profile,
    ):
        context = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=FLAGS
        )
        try:
            tab = context.new_page()
            tab.goto(f"http://127.0.0.1:{front.port}/")
            tab.wait_for_function("window.__log.some(e => e.type === 'ready')", timeout=15000)

            def messages(n: int) -> None:
                tab.wait_for_function(
                    f"window.__log.filter(e => e.type === 'message').length >= {n}", timeout=15000
                )

            half = len(DATA) // 2
            for item in DATA[:half]:
                assert http.post("/api/publish", json={"channel": "conf", "data": item}).is_success
            messages(half)
            front.cut()
            tab.wait_for_function(
                "window.__log.filter(e => e.type === 'ready').length >= 1 && window.__errors >= 1",
                timeout=15000,
            )
            for item in DATA[half:]:
                assert http.post("/api/publish", json={"channel": "conf", "data": item}).is_success
            messages(len(DATA))
            log = tab.evaluate("window.__log")
        finally:
            context.close()
    assert all(e["data"] for e in log if e["type"] == "message"), log
    got = [json.loads(e["data"]) for e in log if e["type"] == "message"]
    assert [g["data"] for g in got] == DATA
    assert [g["offset"] for g in got] == list(range(1, len(DATA) + 1))
    streams = [r for r in front.seen if r["path"] == "/sse"]
    assert len(streams) >= 2
    assert streams[1]["last-event-id"] == got[half - 1]["cursor"]  # the id persisted
    assert all(e["id"] == json.loads(e["data"])["cursor"] for e in log if e["type"] == "message")
