"""A real browser's EventSource (headless Chromium) against /sse, from another origin (CORS).

The server ends every stream after ``sse.max_duration``; the browser reconnects by itself with
``Last-Event-ID`` and the page must end with every message exactly once, in order.
"""

from __future__ import annotations

import http.server
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.transports.conftest import run_server
from tests.transports.readers import channel_name

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason=f"needs Debian's Chromium at {CHROMIUM} (apt-get install chromium)",
    ),
]

PAGE = """<!doctype html><meta charset="utf-8"><title>sse</title><script>
window.__log = []; window.__opens = 0; window.__ready = 0; window.__errors = 0;
const source = new EventSource(%(url)s);
source.onopen = () => { window.__opens += 1; };
source.onerror = () => { window.__errors += 1; };
source.addEventListener("ready", () => { window.__ready += 1; });
source.onmessage = (event) => { window.__log.push(JSON.parse(event.data).data); };
</script>"""


@pytest.fixture(scope="module")
def page_origin() -> Iterator[tuple[str, dict[str, str]]]:
    """A page server on its own port (another origin); the page body is set by the test."""
    content: dict[str, str] = {"page": ""}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = content["page"].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", content
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_browser_eventsource_reconnects_with_last_event_id_and_sees_each_message_once(
    page_origin: tuple[str, dict[str, str]],
) -> None:
    from playwright.sync_api import sync_playwright

    origin, content = page_origin
    channel = channel_name()
    with (
        run_server(allowed_origins=[origin], sse={"retry_ms": 150, "max_duration": 0.6}) as srv,
        sync_playwright() as p,
        httpx.Client(base_url=srv.url) as api,
    ):
        content["page"] = PAGE % {"url": repr(f"{srv.url}/sse?channel={channel}")}
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page()
            resumed: list[str] = []
            page.on(
                "request",
                lambda r: (
                    resumed.append(r.all_headers().get("last-event-id", "")) if "/sse" in r.url else None
                ),
            )
            page.goto(origin + "/")
            page.wait_for_function("window.__ready >= 1", timeout=10000)
            for n in range(1, 41):  # spread over ~2 s: several server-side ends fall in between
                api.post("/api/publish", json={"channel": channel, "data": n}).raise_for_status()
                time.sleep(0.05)
            page.wait_for_function("window.__log.length >= 40 && window.__opens >= 3", timeout=15000)
            log = page.evaluate("window.__log")
        finally:
            browser.close()
    assert log == list(range(1, 41))
    assert resumed[0] == ""
    assert len(resumed) >= 3
    assert all(resumed[1:]), "every reconnect carried Last-Event-ID"
