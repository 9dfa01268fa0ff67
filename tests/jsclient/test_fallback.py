"""tidings.js in headless Chromium: falls back WebSocket → SSE → long polling, losing nothing.

A proxy in front of the server blocks /ws from the start (the client falls back to SSE), then
blocks /sse and cuts the open stream (the client falls back to long polling); publications made
before, during and after the switches reach the page exactly once, in order.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.jsclient.blocking_proxy import BlockingProxy
from tests.serving import serve

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
        not Path(CHROMIUM).exists(),
        reason=f"needs Debian's Chromium at {CHROMIUM} (apt-get install chromium)",
    ),
]

PAGE = b"""<!doctype html><meta charset="utf-8"><title>fallback</title>
<script type="module">
import { Tidings } from "/static/tidings.js";
window.got = []; window.transports = []; window.gaps = [];
const client = new Tidings(location.origin, { minBackoff: 50, maxBackoff: 200,
                                              longPollTimeout: 2 });
client.on("transport", (t) => window.transports.push(t));

const sub = client.subscribe("fallback");
sub.on("publication", (pub) => window.got.push(pub.data));
sub.on("gap", (gap) => window.gaps.push(gap));
</script>"""


async def test_browser_client_falls_back_and_receives_every_message_once_in_order():
    from playwright.async_api import async_playwright

    with serve() as server:
        proxy = await BlockingProxy(server.port, PAGE).start()
        proxy.block("/ws")
        try:
            async with async_playwright() as p, httpx.AsyncClient(base_url=server.url) as api:
                browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
                page = await browser.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(f"http://127.0.0.1:{proxy.port}/page.html")
                await page.wait_for_function("window.transports.includes('sse')", timeout=15000)

                async def publish(values: range) -> None:
                    for n in values:
                        r = await api.post("/api/publish", json={"channel": "fallback", "data": n})
                        assert r.status_code == 200

                # SSE has sent `ready`: it is live.
                await publish(range(1, 6))
                await page.wait_for_function("window.got.length >= 5", timeout=15000)
                proxy.block("/sse")
                await publish(range(6, 11))  # while the client is switching
                await page.wait_for_function("window.transports.includes('longpoll')", timeout=15000)
                await publish(range(11, 16))
                await page.wait_for_function("window.got.length >= 15", timeout=15000)
                await asyncio.sleep(0.5)  # a duplicate would arrive now, if there were one
                got = await page.evaluate("window.got")
                assert got == list(range(1, 16))
                assert await page.evaluate("window.transports") == ["sse", "longpoll"]
                assert await page.evaluate("window.gaps") == []
                assert errors == []
                await browser.close()
        finally:
            await proxy.stop()
