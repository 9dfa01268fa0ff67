"""The demo pages do what they show: chat, ticker, progress, log tail, webhook inbox, lab."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.browser.conftest import API_KEY, needs, screenshot
from tests.serving import RunningServer

HTTP_TRANSPORTS = "the HTTP transports"


def js_round(x: float) -> int:
    """``Math.round``: halves up (Python's round() goes to even)."""
    return math.floor(x + 0.5)


def join_chat(page: Any, nick: str) -> None:
    page.fill("#nick", nick)
    page.click("#join button")
    page.wait_for_selector("#text:enabled")


def say(page: Any, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")


def test_chat_two_people_see_each_others_messages_and_presence(page_for: Callable[..., Any]) -> None:
    ada = page_for("/chat")
    join_chat(ada, "ada")
    say(ada, "anyone here?")
    bob = page_for("/chat")
    join_chat(bob, "bob")

    bob.wait_for_selector("#messages li:text-is('ada: anyone here?')")  # history on join
    ada.wait_for_selector("#people li:text-is('bob')")
    bob.wait_for_selector("#people li:text-is('ada')")
    say(ada, "hi bob")
    bob.wait_for_selector("#messages li:text-is('ada: hi bob')")
    say(bob, "hi ada")
    ada.wait_for_selector("#messages li:text-is('bob: hi ada')")
    screenshot(ada, "chat.png")

    bob.close()
    ada.wait_for_selector("#messages li:text-is('bob left')")
    ada.wait_for_selector("#people li:text-is('bob')", state="detached")


def test_ticker_streams_prices_into_every_sparkline(
    page_for: Callable[..., Any], server: RunningServer
) -> None:
    needs(server, "/sse?channel=ticker:ACME", HTTP_TRANSPORTS)
    page = page_for("/ticker")
    page.wait_for_function("""() => {
      const cards = [...document.querySelectorAll('[data-symbol]')];
      return cards.length === 6 && cards.every((c) => Number(c.dataset.updates) >= 3);
    }""")
    points = page.eval_on_selector("[data-symbol='ACME'] polyline", "p => p.getAttribute('points')")
    assert len(points.split()) >= 3
    assert page.text_content("#transport") == "via sse"


def test_log_tail_shows_lines_as_they_stream(page_for: Callable[..., Any], server: RunningServer) -> None:
    needs(server, "/stream?channel=logs:demo", HTTP_TRANSPORTS)
    page = page_for("/logs")
    page.wait_for_function("() => document.querySelectorAll('#tail span').length >= 4")
    assert page.text_content("#status") == "connected"


@pytest.mark.parametrize("transport", ["sse", "longpoll"])
def test_progress_streams_and_resumes_after_a_reload(
    transport: str, page_for: Callable[..., Any], server: RunningServer
) -> None:
    needs(server, "/sse?channel=x" if transport == "sse" else "/poll?channel=x&timeout=0", HTTP_TRANSPORTS)
    page = page_for("/progress")
    if transport == "longpoll":
        page.check("#longpoll")
    page.click("#start")
    page.wait_for_function("() => document.getElementById('bar').value >= 20")
    assert f"via {transport}" in (page.text_content("#status") or "")
    seen = page.eval_on_selector_all("#log li", "lis => lis.length")

    page.reload()
    page.wait_for_function(f"() => document.querySelectorAll('#log li').length > {seen}")
    page.wait_for_selector("#summary:has-text('done')")
    lines = page.eval_on_selector_all("#log li", "lis => lis.map(li => li.textContent)")
    steps = [int(re.match(r"step (\d+)/40", line).group(1)) for line in lines]  # type: ignore[union-attr]
    assert steps == list(range(1, 41))  # the whole job once, in order, across the reload
    assert page.eval_on_selector("#bar", "b => b.value") == 100


def test_webhook_inbox_shows_signed_events_and_rejects_tampered_ones(
    page_for: Callable[..., Any], server: RunningServer
) -> None:
    needs(server, "/hooks/demo", "the webhooks", method="POST")
    page = page_for("/webhooks")
    page.wait_for_selector("#status[data-state='connected']")
    page.click("#send")
    page.wait_for_selector("#sent li.accepted")
    page.wait_for_selector("#inbox li.received:has-text('order.paid')")
    page.click("#tampered")
    page.wait_for_selector("#sent li.rejected:has-text('401')")
    assert page.locator("#inbox li.received").count() == 1


def test_transport_lab_shows_the_same_messages_on_all_five_transports(
    page_for: Callable[..., Any], server: RunningServer
) -> None:
    for path in ("/sse?channel=x", "/stream?channel=x", "/poll?channel=x&timeout=0"):
        needs(server, path, HTTP_TRANSPORTS)
    page = page_for("/lab")
    page.click("#burst")
    page.wait_for_function("""() => Object.values(window.lab.received).length === 5 &&
      Object.values(window.lab.received).every((got) => got.length === 20)""")
    received = page.evaluate("() => window.lab.received")
    assert all(got == list(range(1, 21)) for got in received.values()), received
    page.wait_for_selector("tr[data-measure='messages'] td[data-transport='poll']:text-is('20')")
    numbers = page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('#numbers tbody tr')]
      .map((tr) => [tr.dataset.measure, [...tr.querySelectorAll('td')].map((td) => td.textContent)]))""")
    for measure in ("requests", "bytes", "perMessage"):
        assert all(float(v) > 0 for v in numbers[measure]), numbers
    for measure in ("p50", "p99"):
        assert all(float(v) >= 0 for v in numbers[measure]), numbers
    screenshot(page, "lab.png")


def test_transport_lab_times_only_its_own_messages_not_those_published_elsewhere(
    page_for: Callable[..., Any], server: RunningServer
) -> None:
    for path in ("/sse?channel=x", "/stream?channel=x", "/poll?channel=x&timeout=0"):
        needs(server, path, HTTP_TRANSPORTS)
    page = page_for("/lab")
    page.wait_for_function("() => Object.keys(window.lab.clients).length === 5")
    channel = page.evaluate("() => window.lab.channel")
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10) as api:
        for data in ({"text": "from the CLI"}, "a plain string"):
            api.post("/api/publish", json={"channel": channel, "data": data}).raise_for_status()

    def latencies() -> dict[str, list[str]]:
        page.wait_for_selector("tr[data-measure='messages'] td[data-transport='poll']:text-is('2')")
        found: dict[str, list[str]] = page.evaluate("""() => Object.fromEntries(
          ['p50', 'p99'].map((m) => [m, [...document.querySelectorAll(
            `tr[data-measure='${m}'] td`)].map((td) => td.textContent)]))""")
        return found

    # No send time to measure from: "–", not NaN.
    assert latencies() == {"p50": ["–"] * 5, "p99": ["–"] * 5}
    assert page.text_content("#feed-sse li") == "(published elsewhere)"
    page.click("#one")
    page.wait_for_selector("tr[data-measure='messages'] td[data-transport='poll']:text-is('3')")
    page.wait_for_function("""() => [...document.querySelectorAll("tr[data-measure='p99'] td")]
      .every((td) => td.textContent !== '–')""")
    timed = page.evaluate("""() => [...document.querySelectorAll("tr[data-measure='p99'] td")]
      .map((td) => Number(td.textContent))""")
    assert all(value >= 0 for value in timed), timed


def test_transport_lab_shows_the_websocket_bytes_on_the_wire_per_message(
    page_for: Callable[..., Any], server: RunningServer
) -> None:
    """Chromium negotiates permessage-deflate and cannot see compressed sizes: each WebSocket
    message in the lab shows the server's count of the frame it wrote (``wire_stats``; that the
    count is the bytes on the socket: tests/engines/conformance.py), smaller than the same
    frame uncompressed for 1 KB payloads, and the table their means."""
    for path in ("/sse?channel=x", "/stream?channel=x", "/poll?channel=x&timeout=0"):
        needs(server, path, HTTP_TRANSPORTS)
    page = page_for("/lab")
    page.select_option("#size", "1024")
    page.wait_for_function("() => window.lab.wireCounting")
    assert page.text_content("#extensions") == "permessage-deflate; client_no_context_takeover"
    page.click("#burst")
    page.wait_for_function("() => document.querySelectorAll('#feed-ws li[data-wire]').length === 20")
    wire = page.evaluate("() => [...window.lab.wire.values()]")
    assert [m["offset"] for m in wire] == sorted(m["offset"] for m in wire) and len(wire) == 20
    assert all(m["compressed"] and not m["delta"] and m["wire"] < m["full"] for m in wire), wire
    # consecutive ~1.1 KB messages that differ in a few bytes: chained, most are a few dozen bytes
    assert sorted(m["wire"] for m in wire)[10] * 5 < wire[0]["full"], wire
    first = page.text_content("#feed-ws li:last-child")
    assert first == f"#1 {wire[0]['wire']} B on the wire / {wire[0]['full']} B (compressed)", first
    means = {m: str(js_round(sum(w[k] for w in wire) / 20)) for m, k in (("wire", "wire"), ("plain", "full"))}
    # the table's next render (every 500 ms) has every message
    page.wait_for_selector(
        f"tr[data-measure='wirePerMessage'] td[data-transport='ws']:text-is('{means['wire']}')"
    )
    page.wait_for_selector(
        f"tr[data-measure='plainPerMessage'] td[data-transport='ws']:text-is('{means['plain']}')"
    )
    others = page.evaluate("""() => [...document.querySelectorAll(
      "tr[data-measure='wirePerMessage'] td:not([data-transport='ws'])")].map((td) => td.textContent)""")
    assert others == ["–"] * 4
    screenshot(page, "lab-wire.png")
