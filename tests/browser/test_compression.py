"""Chromium negotiates permessage-deflate with /ws and reads compressed publications (issue 19)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.browser.conftest import API_KEY
from tests.serving import RunningServer

OPEN = """async (url) => {
  window.received = [];
  const ws = new WebSocket(url);
  window.ws = ws;
  ws.onmessage = (event) => window.received.push(JSON.parse(event.data));
  await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
  ws.send(JSON.stringify({op: "subscribe", ref: 1, channel: "deflate:browser"}));
  while (!window.received.some((m) => m.op === "subscribed")) await new Promise((r) => setTimeout(r, 20));
  return ws.extensions;
}"""

RECEIVE = """async () => {
  while (!window.received.some((m) => m.op === "message")) await new Promise((r) => setTimeout(r, 20));
  window.ws.close();
  return window.received.filter((m) => m.op === "message");
}"""


def test_chromium_reads_a_compressed_publication(page_for: Callable[..., Any], server: RunningServer) -> None:
    """Chromium offers permessage-deflate; the answer is tidings' (no context takeover either
    way); its compressed subscribe is read, and a 6 KB publication, compressed once for every
    subscriber, arrives whole."""
    page = page_for("/")
    extensions = page.evaluate(OPEN, server.ws_url)
    assert extensions == "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    data = {"rows": [{"id": i, "symbol": "ACME", "price": 100.5 + i} for i in range(150)]}
    answer = httpx.post(
        f"{server.url}/api/publish",
        json={"channel": "deflate:browser", "data": data},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    [message] = page.evaluate(RECEIVE)
    assert message["data"] == data
    assert message["offset"] == answer.json()["offset"]
