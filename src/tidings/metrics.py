"""Prometheus metrics of one node, served at ``GET /metrics``.

Every :class:`~tidings.node.Node` has its own :class:`Metrics` with its own
:class:`~prometheus_client.CollectorRegistry`, so several nodes in one process (tests, embedding)
never collide and nothing lands in prometheus_client's global registry.

The hot path stays cheap: nothing here is touched per subscriber per message.

- Connections, subscriptions, publications and deliveries are plain integers the node and hub
  keep anyway; :class:`_NodeCollector` reads them at scrape time.
- The hub counts deliveries per fan-out, per transport (``Hub.delivered``: one dict update per
  transport present on the channel, not per subscriber).
- Delivery latency (publish → the transport's write) is observed once every
  :attr:`Metrics.latency_sample_every` fan-outs, on one subscriber of that fan-out.

Metric names (``docs/reference/metrics.md`` lists them with their labels; a test keeps the two in
step). Counters that other parts of tidings increment:

- ``webhook_attempts`` (label ``outcome``: ``success`` | ``failure``; the dispatcher may add
  ``timeout``/``error``) — :meth:`Metrics.webhook_attempt`;
- ``webhook_queue_depth`` — :meth:`Metrics.watch_webhook_queue` with a callable;
- ``inbound_webhooks`` (labels ``receiver``, ``outcome``: ``verified`` | ``invalid_signature`` |
  ``stale`` | ``duplicate`` | ``error``) — :meth:`Metrics.inbound_webhook`;
- ``proxy_requests`` (labels ``proxy``: ``connect`` | ``refresh`` | ``subscribe`` | ``publish`` |
  ``rpc``, ``outcome``: ``result`` | ``error`` | ``disconnect`` | ``unavailable``),
  ``proxy_errors`` (labels ``proxy``, ``reason``: ``timeout`` | ``unreachable`` | ``status`` |
  ``invalid``), ``proxy_latency_seconds`` (label ``proxy``) and ``proxy_in_flight`` —
  :meth:`Metrics.proxy_request`, :meth:`Metrics.proxy_error`;
- ``broker_operations`` / ``broker_errors`` (label ``operation``) are counted by
  :meth:`Metrics.instrument_broker`, which the node applies to its broker;
- ``consumer_*`` (labels ``consumer``, ``kind``): read at scrape time from the states given to
  :meth:`Metrics.watch_consumers` (:class:`~tidings.consumers.runner.ConsumerState`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from tidings.node import Node

__all__ = ["BROKER_OPERATIONS", "CONTENT_TYPE", "LATENCY_BUCKETS", "METRIC_NAMES", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: Every metric family a node exports (as named in the exposition), with its labels.
METRIC_NAMES: dict[str, tuple[str, ...]] = {
    "tidings_connections": ("transport",),
    "tidings_subscriptions": ("transport",),
    "tidings_publications_total": (),
    "tidings_deliveries_total": ("transport",),
    "tidings_delivery_latency_seconds": (),
    "tidings_connections_opened_total": ("transport",),
    "tidings_disconnects_total": ("transport", "reason"),
    "tidings_outbox_overflows_total": ("transport",),
    "tidings_slow_consumer_disconnects_total": ("transport",),
    "tidings_broker_operations_total": ("operation",),
    "tidings_broker_errors_total": ("operation",),
    "tidings_broker_available": (),
    "tidings_webhook_attempts_total": ("outcome",),
    "tidings_webhook_queue_depth": (),
    "tidings_inbound_webhooks_total": ("receiver", "outcome"),
    "tidings_draining": (),
    "tidings_delivery_lag_seconds": (),
    "tidings_publishes_held_total": (),
    "tidings_proxy_requests_total": ("proxy", "outcome"),
    "tidings_proxy_errors_total": ("proxy", "reason"),
    "tidings_proxy_latency_seconds": ("proxy",),
    "tidings_proxy_in_flight": (),
    "tidings_consumer_connected": ("consumer", "kind"),
    "tidings_consumer_lag": ("consumer", "kind"),
    "tidings_consumer_published_total": ("consumer", "kind"),
    "tidings_consumer_failed_total": ("consumer", "kind"),
    "tidings_consumer_dead_lettered_total": ("consumer", "kind"),
    "tidings_consumer_reconnects_total": ("consumer", "kind"),
}

#: The broker calls counted in ``tidings_broker_operations_total`` / ``_errors_total``.
BROKER_OPERATIONS = (
    "publish",
    "publish_control",
    "subscribe",
    "unsubscribe",
    "since",
    "latest",
    "position",
    "channels",
    "ping",
)

T = TypeVar("T")


class _NodeCollector(Collector):
    """Reads the node's own integers at scrape time (see the module docstring)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        connections = GaugeMetricFamily(
            "tidings_connections", "Open client connections.", labels=["transport"]
        )
        for transport, count in sorted(node.connection_counts().items()):
            connections.add_metric([transport], count)
        yield connections
        subscriptions = GaugeMetricFamily(
            "tidings_subscriptions", "Channel subscriptions of this node's clients.", labels=["transport"]
        )
        for transport, count in sorted(node.hub.subscriptions_by_transport().items()):
            subscriptions.add_metric([transport], count)
        yield subscriptions
        yield CounterMetricFamily(
            "tidings_publications", "Publications accepted by this node.", value=node.publications
        )
        deliveries = CounterMetricFamily(
            "tidings_deliveries",
            "Publications handed to subscribers' outboxes (live fan-out).",
            labels=["transport"],
        )
        for transport, count in sorted(node.hub.delivered.items()):
            deliveries.add_metric([transport], count)
        yield deliveries
        yield GaugeMetricFamily(
            "tidings_broker_available", "1 while the broker answers.", value=1 if node.broker_available else 0
        )
        yield GaugeMetricFamily(
            "tidings_draining", "1 while the node drains for shutdown.", value=1 if node.draining else 0
        )
        yield GaugeMetricFamily(
            "tidings_delivery_lag_seconds",
            "How long deliveries wait for their clients (flow control's gauge).",
            value=node.flow.lag(),
        )
        yield CounterMetricFamily(
            "tidings_publishes_held",
            "Publishes whose answer waited for the deliveries to catch up.",
            value=node.flow.held,
        )


class _CountsCollector(Collector):
    """The counters bumped once or more per request (connections opened and closed, broker
    calls): plain integers, read at scrape time. A prometheus_client ``Counter.inc`` takes a lock
    each time, which long polling paid several times per poll."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        for name, doc, labels, counts in (
            (
                "tidings_connections_opened",
                "Client connections accepted.",
                ["transport"],
                {(k,): v for k, v in m.opened.items()},
            ),
            (
                "tidings_disconnects",
                "Client connections closed, by close reason.",
                ["transport", "reason"],
                m.closed,
            ),
            (
                "tidings_broker_operations",
                "Broker calls made by this node.",
                ["operation"],
                {(k,): v[0] for k, v in m.broker_calls.items()},
            ),
            (
                "tidings_broker_errors",
                "Broker calls that failed.",
                ["operation"],
                {(k,): v[1] for k, v in m.broker_calls.items()},
            ),
        ):
            family = CounterMetricFamily(name, doc, labels=labels)
            for key, value in sorted(counts.items()):
                family.add_metric(list(key), value, created=m.created)
            yield family


class ConsumerStats(Protocol):
    """What the consumer metrics read of a consumer's state (``tidings.consumers.runner``)."""

    name: str
    kind: str
    connected: bool
    lag: int | None
    published: int
    failed: int
    dead_lettered: int
    reconnects: int


class _ConsumersCollector(Collector):
    """Per consumer: connected, lag, published, failed, dead-lettered, reconnects."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        states = self.metrics.consumer_states()
        labels = ["consumer", "kind"]
        connected = GaugeMetricFamily(
            "tidings_consumer_connected", "1 while the consumer reaches its source.", labels=labels
        )
        lag = GaugeMetricFamily(
            "tidings_consumer_lag", "Messages waiting in the consumer's source.", labels=labels
        )
        counters = [
            (CounterMetricFamily(name, doc, labels=labels), attribute)
            for name, doc, attribute in (
                ("tidings_consumer_published", "Messages the consumer published.", "published"),
                ("tidings_consumer_failed", "Publishes that failed for a while (retried).", "failed"),
                ("tidings_consumer_dead_lettered", "Messages set aside with their error.", "dead_lettered"),
                ("tidings_consumer_reconnects", "Times the source was lost and reached again.", "reconnects"),
            )
        ]
        for state in states:
            key = [state.name, state.kind]
            connected.add_metric(key, 1 if state.connected else 0)
            if state.lag is not None:
                lag.add_metric(key, state.lag)
            for family, attribute in counters:
                family.add_metric(key, getattr(state, attribute))
        yield connected
        yield lag
        for family, _ in counters:
            yield family


class Metrics:
    """The metrics of one node (see the module docstring)."""

    def __init__(self, node: Node | None = None, *, latency_sample_every: int = 16) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        #: Observe publish → write latency on one fan-out in this many (1: every fan-out).
        self.latency_sample_every = latency_sample_every
        self.delivery_latency = Histogram(
            "tidings_delivery_latency_seconds",
            "Seconds from publish to the write on a subscriber's connection (sampled fan-outs).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.created = time.time()
        self.opened: dict[str, int] = {}
        self.closed: dict[tuple[str, str], int] = {}
        self.broker_calls: dict[str, list[int]] = {}  # operation: [calls, errors]
        r.register(_CountsCollector(self))
        self.consumer_states: Callable[[], Sequence[ConsumerStats]] = tuple
        r.register(_ConsumersCollector(self))
        self.outbox_overflows = Counter(
            "tidings_outbox_overflows",
            "Outboxes that overflowed (the client was too slow).",
            ["transport"],
            registry=r,
        )
        self.slow_consumers = Counter(
            "tidings_slow_consumer_disconnects",
            "Connections closed as slow consumers (4008).",
            ["transport"],
            registry=r,
        )
        self.webhook_attempts = Counter(
            "tidings_webhook_attempts",
            "Outbound webhook delivery attempts, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.webhook_queue_depth = Gauge(
            "tidings_webhook_queue_depth", "Outbound webhook deliveries queued or in flight.", registry=r
        )
        self.inbound_webhooks = Counter(
            "tidings_inbound_webhooks",
            "Inbound webhook requests, by receiver and outcome.",
            ["receiver", "outcome"],
            registry=r,
        )
        self.proxy_requests = Counter(
            "tidings_proxy_requests",
            "Requests to the application's backend, by proxy and outcome (result, error: "
            "refused, disconnect, unavailable: down, slow or a broken answer).",
            ["proxy", "outcome"],
            registry=r,
        )
        self.proxy_errors = Counter(
            "tidings_proxy_errors",
            "Proxy requests that got no usable answer, by proxy and reason.",
            ["proxy", "reason"],
            registry=r,
        )
        self.proxy_latency = Histogram(
            "tidings_proxy_latency_seconds",
            "Seconds from asking a proxy to its answer (the wait for a free slot included).",
            ["proxy"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.proxy_in_flight = Gauge(
            "tidings_proxy_in_flight", "Proxy requests sent and not yet answered.", registry=r
        )
        if node is not None:
            r.register(_NodeCollector(node))

    # what other parts of tidings call --------------------------------------------------------

    def observe_latency(self, seconds: float) -> None:
        self.delivery_latency.observe(max(0.0, seconds))

    def observe_since(self, publication_time_ms: int) -> None:
        """Observe the latency of a publication published at ``publication_time_ms`` (Unix ms)."""
        self.observe_latency(time.time() - publication_time_ms / 1000)

    def connection_opened(self, transport: str) -> None:
        self.opened[transport] = self.opened.get(transport, 0) + 1

    def connection_closed(self, transport: str, reason: str) -> None:
        """Count a close; ``reason`` is a close-code name in lower case (``service_restart``)."""
        key = (transport, reason)
        self.closed[key] = self.closed.get(key, 0) + 1
        if reason == "slow_consumer":
            self.slow_consumers.labels(transport).inc()

    def outbox_overflow(self, transport: str) -> None:
        self.outbox_overflows.labels(transport).inc()

    def webhook_attempt(self, outcome: str) -> None:
        """One outbound attempt ended: ``success``, ``failure`` (or ``timeout``, ``error``)."""
        self.webhook_attempts.labels(outcome).inc()

    def watch_webhook_queue(self, depth: Callable[[], int]) -> None:
        """Read the outbound queue depth from ``depth()`` at every scrape."""
        self.webhook_queue_depth.set_function(lambda: float(depth()))

    def watch_consumers(self, states: Callable[[], Sequence[ConsumerStats]]) -> None:
        """Read the consumers' states from ``states()`` at every scrape."""
        self.consumer_states = states

    def inbound_webhook(self, receiver: str, outcome: str) -> None:
        """One inbound request to ``/hooks/{receiver}`` was verified, refused or deduplicated."""
        self.inbound_webhooks.labels(receiver, outcome).inc()

    def proxy_request(self, proxy: str, outcome: str, seconds: float) -> None:
        """One proxy request ended with ``outcome`` after ``seconds``."""
        self.proxy_requests.labels(proxy, outcome).inc()
        self.proxy_latency.labels(proxy).observe(max(0.0, seconds))

    def proxy_error(self, proxy: str, reason: str) -> None:
        """A proxy request got no usable answer: ``timeout``, ``unreachable``, ``status``,
        ``invalid``."""
        self.proxy_errors.labels(proxy, reason).inc()

    def instrument_broker(self, broker: object) -> None:
        """Count every call of the broker's operations (:data:`BROKER_OPERATIONS`).

        Wraps the bound methods on the instance, so ``node.broker`` stays the broker itself
        (``isinstance`` and broker-specific attributes keep working). A broker that does not
        allow it (``__slots__``) is left uninstrumented.
        """
        for operation in BROKER_OPERATIONS:
            method = getattr(broker, operation, None)
            if method is None:
                continue
            try:
                setattr(broker, operation, self._counted(operation, method))
            except AttributeError:
                return

    def _counted(self, operation: str, method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        counts = self.broker_calls.setdefault(operation, [0, 0])

        @functools.wraps(method)
        async def counted(*args: Any, **kwargs: Any) -> T:
            counts[0] += 1
            try:
                return await method(*args, **kwargs)
            except Exception:
                counts[1] += 1
                raise

        return counted

    def exposition(self) -> bytes:
        """The text exposition format of everything in this node's registry."""
        return generate_latest(self.registry)
