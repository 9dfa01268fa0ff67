"""tidings.js in headless Chromium applies delta updates transparently, across a dropped
connection (resume) and a gap, over WebSocket, SSE and NDJSON streaming.

The page asks for ``delta: "fossil"``; a proxy in front of the server cuts the open connection
once (the client reconnects and resumes); a second channel, with a history of two, is resumed
from a position history no longer covers (a gap, then what survived in full, then deltas). The
page must see every publication's full data, in order, once, and have applied deltas.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import orjson
import pytest

from tests.engines.test_delta import NAMESPACES, ticker
from tests.jsclient.blocking_proxy import BlockingProxy
from tests.jsclient.test_fallback import CHROMIUM, FLAGS
from tests.serving import serve
from tests.transports.readers import publish

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Debian's Chromium at {CHROMIUM}"),
]

PAGE = """<!doctype html><meta charset="utf-8"><title>delta</title>
<script type="module">
import { Tidings } from "/static/tidings.js";
window.got = {}; window.gaps = [];
const client = window.client = new Tidings(location.origin, {
  transports: [TRANSPORT], delta: "fossil", minBackoff: 50, maxBackoff: 200 });
for (const [channel, since] of CHANNELS) {
  window.got[channel] = [];
  const sub = client.subscribe(channel, since ? { since } : {});
  sub.on("publication", (pub) => window.got[channel].push([pub.offset, pub.data, "delta" in pub]));
  sub.on("gap", (gap) => window.gaps.push(gap));
}
</script>"""


@pytest.mark.parametrize("transport", ["ws", "sse", "stream"])
async def test_browser_client_applies_deltas_across_a_reconnect_and_a_gap(transport: str) -> None:
    from playwright.async_api import async_playwright

    live, short = f"live:browser-{transport}", f"short:browser-{transport}"
    values = [ticker(i) for i in range(12)]
    with serve(namespaces=NAMESPACES) as server:
        async with httpx.AsyncClient(base_url=server.url) as api:
            await publish(api, short, *values[:6])
            epoch = (await api.get(f"/api/channels/{short}/history")).json()["publications"][0]["epoch"]
            channels = [[live, None], [short, {"epoch": epoch, "offset": 1}]]
            page_html = PAGE.replace("TRANSPORT", orjson.dumps(transport).decode()).replace(
                "CHANNELS", orjson.dumps(channels).decode()
            )
            proxy = await BlockingProxy(server.port, page_html.encode()).start()
            path = {"ws": "/ws", "sse": "/sse", "stream": "/stream"}[transport]
            try:
                async with async_playwright() as p:
                    browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
                    page = await browser.new_page()
                    errors: list[str] = []
                    page.on("pageerror", lambda exc: errors.append(str(exc)))
                    await page.goto(f"http://127.0.0.1:{proxy.port}/page.html")
                    # the resumed channel: a gap, then offsets 5 and 6 (what history kept)
                    await page.wait_for_function(f"window.got['{short}'].length >= 2", timeout=15000)
                    await until_live(server, live)

                    await publish(api, live, *values[:5])
                    await publish(api, short, *values[6:9])
                    await page.wait_for_function(f"window.got['{live}'].length >= 5", timeout=15000)
                    proxy.block(path)  # cut the open connection ...
                    proxy.blocked.discard(path)  # ... and let the client come back
                    await publish(api, live, *values[5:8])  # while it reconnects (or once back)
                    await page.wait_for_function(f"window.got['{live}'].length >= 8", timeout=15000)
                    await until_live(server, live)
                    await publish(api, live, *values[8:])
                    await page.wait_for_function(f"window.got['{live}'].length >= 12", timeout=15000)
                    await page.wait_for_function(f"window.got['{short}'].length >= 5", timeout=15000)
                    await asyncio.sleep(0.3)  # a duplicate would arrive now, if there were one
                    got = await page.evaluate("window.got")
                    gaps = await page.evaluate("window.gaps")
                    stats = await page.evaluate("window.client.stats")
                    await browser.close()
            finally:
                await proxy.stop()
    assert [(o, d) for o, d, _ in got[live]] == list(zip(range(1, 13), values, strict=True))
    assert [(o, d) for o, d, _ in got[short]] == list(zip(range(5, 10), values[4:9], strict=True))
    assert not any(has_delta for channel in got.values() for *_, has_delta in channel)
    assert [(g["channel"], g["available_from"]) for g in gaps] == [(short, 5)]
    assert stats["reconnects"] >= 1
    # live: 4 before the cut, at least 3 after; short: at least 2 after the replay
    assert stats["deltas"] >= 9, stats
    assert errors == []


async def until_live(server: object, channel: str) -> None:
    hub = server.node.hub  # type: ignore[attr-defined]
    for _ in range(1000):
        if hub.subscriber_count(channel):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no subscriber of {channel}")
