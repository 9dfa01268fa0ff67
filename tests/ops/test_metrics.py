"""/metrics on a real server: it parses, and the numbers move as traffic flows."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.serving import RunningServer, serve
from tests.wsclient import WS
from tidings.metrics import METRIC_NAMES
from tidings.node import Node

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 10.0


def scrape(server: RunningServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    response = httpx.get(f"{server.url}/metrics", timeout=DEADLINE)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def wait_metric(server: RunningServer, name: str, at_least: float, **labels: str) -> float:
    deadline = time.monotonic() + DEADLINE
    while True:
        got = value(await asyncio.to_thread(scrape, server), name, **labels)
        if got >= at_least or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.05)


async def test_metrics_parse_and_move_with_traffic(server: RunningServer):
    before = scrape(server)
    assert value(before, "tidings_publications_total") == 0
    async with await WS.open(server.ws_url) as a, await WS.open(server.ws_url) as b:
        await a.request("subscribe", channel="m:feed")
        await b.request("subscribe", channel="m:feed")
        during = scrape(server)
        assert value(during, "tidings_connections", transport="ws") == 2
        assert value(during, "tidings_subscriptions", transport="ws") == 2
        async with httpx.AsyncClient(base_url=server.url) as http:
            for i in range(20):
                response = await http.post("/api/publish", json={"channel": "m:feed", "data": i})
                assert response.status_code == 200
        await a.messages(20)
        await b.messages(20)
        assert await wait_metric(server, "tidings_delivery_latency_seconds_count", 1) >= 1
        after = scrape(server)
    assert value(after, "tidings_publications_total") == 20
    assert value(after, "tidings_deliveries_total", transport="ws") == 40
    assert value(after, "tidings_connections_opened_total", transport="ws") == 2
    assert value(after, "tidings_broker_operations_total", operation="publish") == 20
    assert value(after, "tidings_broker_operations_total", operation="subscribe") >= 1
    assert value(after, "tidings_broker_errors_total", operation="publish") == 0
    assert value(after, "tidings_broker_available") == 1
    assert value(after, "tidings_delivery_latency_seconds_sum") < 5
    closed = await wait_metric(server, "tidings_disconnects_total", 2, transport="ws", reason="normal")
    assert closed == 2
    final = scrape(server)
    assert value(final, "tidings_connections", transport="ws") == 0
    assert value(final, "tidings_subscriptions", transport="ws") == 0


async def test_a_slow_consumer_is_counted():
    with serve(limits={"outbox_bytes": 65536, "outbox_messages": 10}) as server:
        # uncompressed: with permessage-deflate a frame of 60,000 x's is 80 bytes on the wire
        async with connect(server.ws_url, max_queue=1, compression=None) as ws:
            await ws.send('{"op":"subscribe","ref":1,"channel":"slow"}')
            await ws.recv()
            payload = "x" * 60000
            async with httpx.AsyncClient(base_url=server.url) as http:
                for i in range(400):  # the client reads nothing: TCP buffers fill, then the outbox
                    await http.post("/api/publish", json={"channel": "slow", "data": payload})
                    if i % 10 == 9 and value(
                        await asyncio.to_thread(scrape, server),
                        "tidings_outbox_overflows_total",
                        transport="ws",
                    ):
                        break
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), DEADLINE)
            except ConnectionClosed:
                pass
            assert ws.close_code == 4008
        assert await wait_metric(server, "tidings_slow_consumer_disconnects_total", 1, transport="ws") == 1
        assert value(scrape(server), "tidings_outbox_overflows_total", transport="ws") == 1


async def test_nodes_in_one_process_have_separate_registries():
    async with Node() as one, Node() as two:
        await one.publish("a", 1)
        assert b"tidings_publications_total 1.0" in one.metrics.exposition()
        assert b"tidings_publications_total 0.0" in two.metrics.exposition()
        two.metrics.webhook_attempt("success")
        two.metrics.inbound_webhook("github", "verified")
        two.metrics.watch_webhook_queue(lambda: 7)
        text = two.metrics.exposition().decode()
    assert 'tidings_webhook_attempts_total{outcome="success"} 1.0' in text
    assert 'tidings_inbound_webhooks_total{outcome="verified",receiver="github"} 1.0' in text
    assert "tidings_webhook_queue_depth 7.0" in text


async def test_every_exported_metric_is_documented():
    async with Node() as node:
        node.metrics.webhook_attempt("success")
        node.metrics.inbound_webhook("x", "verified")
        node.metrics.connection_closed("ws", "slow_consumer")
        node.metrics.outbox_overflow("ws")
        node.metrics.observe_latency(0.01)
        node.metrics.connection_opened("ws")
        exported = {
            family.name
            for family in text_string_to_metric_families(node.metrics.exposition().decode())
            if not family.name.endswith("_created")
        }
    counters = {name.removesuffix("_total") for name in METRIC_NAMES}
    assert exported == counters, "tidings.metrics.METRIC_NAMES is out of date"
    doc = (ROOT / "docs" / "reference" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `(tidings_[a-z_]+)` \|", doc, re.MULTILINE))
    assert documented == set(METRIC_NAMES)


class Listener:
    """A minimal hub subscriber of a given transport (what a transport adapter looks like)."""

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self.got: list[int] = []

    def deliver(self, publication: Any) -> None:
        self.got.append(publication.publication.data)

    def control(self, channel: str, message: dict[str, Any]) -> None:
        pass


async def test_deliveries_and_subscriptions_are_counted_per_transport_per_fan_out():
    async with Node() as node:
        ws, sse, sse2 = Listener("ws"), Listener("sse"), Listener("sse")
        for listener in (ws, sse, sse2):
            await node.subscribe(listener, "c", None, lambda result: None)
        await node.subscribe(ws, "d", None, lambda result: None)
        assert node.hub.subscriptions_by_transport() == {"ws": 2, "sse": 2}
        await node.publish("c", 1)
        await node.publish("d", 2)
        await node.unsubscribe(sse2, "c")
        await node.publish("c", 3)
        assert node.hub.delivered == {"ws": 3, "sse": 3}
        assert node.hub.subscriptions_by_transport() == {"ws": 2, "sse": 1}
        await node.unsubscribe(ws, "c")
        await node.unsubscribe(ws, "d")
        await node.unsubscribe(sse, "c")
        assert node.hub.subscriptions_by_transport() == {}
        assert ws.got == [1, 2, 3] and sse2.got == [1]
