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

RECEIVE = """async (count) => {
  const messages = () => window.received.filter((m) => m.op === "message");
  while (messages().length < count) await new Promise((r) => setTimeout(r, 20));
  window.ws.close();
  return messages();
}"""


def test_chromium_reads_compressed_publications(page_for: Callable[..., Any], server: RunningServer) -> None:
    """Chromium offers permessage-deflate; the answer is tidings' (the server keeps its context,
    the client does not); its compressed subscribe is read, and consecutive 6 KB publications,
    each compressed once for every subscriber (chained to the one before), arrive whole."""
    page = page_for("/")
    extensions = page.evaluate(OPEN, server.ws_url)
    assert extensions == "permessage-deflate; client_no_context_takeover"
    feed = [
        {"rows": [{"id": i, "symbol": "ACME", "price": 100.5 + i + n} for i in range(150)]} for n in range(4)
    ]
    offsets = []
    for data in feed:
        answer = httpx.post(
            f"{server.url}/api/publish",
            json={"channel": "deflate:browser", "data": data},
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        offsets.append(answer.json()["offset"])
    messages = page.evaluate(RECEIVE, len(feed))
    assert [m["data"] for m in messages] == feed
    assert [m["offset"] for m in messages] == offsets
