"""How far the node's deliveries lag behind, measured by probes that travel behind the data.

A server that writes faster than its clients read does not see it: the bytes leave its socket
buffers for the clients' receive buffers (on a fast network, at once) and wait there. Delivery
latency grows while every write still succeeds. What does show it is a probe queued behind the
data, a WebSocket ping: its echo (the pong) comes back only once the client has read everything
written before it. Its round trip, less the smallest round trip the same connection has shown
(the network's share), is how long data waits for that client: its lag.

A few connections that are receiving data serve as *sentinels*, each for a term, so that over
time the gauge samples the whole population. The node's lag is the lower median of the
sentinels' lags: one slow client among them does not count as the node falling behind, which is
what the outbox limit (4008) is for. While a probe is out, its age already counts, so a lag is
seen while it grows, not only once the echo is back. A sample goes stale after ``fresh``
seconds: a node whose sentinels say nothing new is not taken to be behind.

A lag may also be asked of some sentinels only (``among``): a publish waits for the sentinels
that receive its channel. A client that stops reading lags on its own, and a probe cannot tell
that from the node falling behind; counted only for its own channels, a handful of stalled
clients holds the publishers whose publications they fail to read, not every publisher.

Pure logic: the caller sends the probes (:meth:`LagGauge.probe` gives the payload) and reports
the echoes (:meth:`LagGauge.echoed`), with its own clock's ``now``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["LagGauge"]

K = TypeVar("K")


class _Sentinel:
    __slots__ = ("base", "lag", "sampled", "sent", "since", "token")

    def __init__(self, since: float) -> None:
        self.since = since
        self.token = b""
        self.sent: float | None = None  # when the probe now out was sent
        self.base = float("inf")  # the smallest round trip seen: the network's share
        self.lag = 0.0
        self.sampled = float("-inf")

    def value(self, now: float, fresh: float) -> float:
        lag = self.lag if now - self.sampled <= fresh else 0.0
        if self.sent is not None:
            base = self.base if self.base != float("inf") else 0.0
            lag = max(lag, now - self.sent - base)
        return lag


class LagGauge(Generic[K]):
    """The lag of a node's deliveries, from the probes of up to ``sentinels`` connections."""

    __slots__ = ("_count", "_sentinels", "fresh", "size", "term")

    def __init__(self, *, sentinels: int = 3, term: float = 2.0, fresh: float = 0.1) -> None:
        if sentinels < 1:
            raise ValueError("a gauge needs at least one sentinel")
        self.size = sentinels
        self.term = term
        self.fresh = fresh
        self._sentinels: dict[K, _Sentinel] = {}
        self._count = 0

    def __len__(self) -> int:
        return len(self._sentinels)

    def __contains__(self, key: object) -> bool:
        return key in self._sentinels

    @property
    def full(self) -> bool:
        return len(self._sentinels) >= self.size

    def enlist(self, key: K, now: float) -> bool:
        """Make ``key`` a sentinel if there is room; True if it is one now."""
        if key in self._sentinels:
            return True
        if self.full:
            return False
        self._sentinels[key] = _Sentinel(now)
        return True

    def retire(self, now: float) -> None:
        """End the terms that are over, so that other connections get sampled."""
        over = [key for key, s in self._sentinels.items() if now - s.since >= self.term]
        for key in over:
            del self._sentinels[key]

    def forget(self, key: K) -> None:
        """``key`` is gone (closed): it is no sentinel any more."""
        self._sentinels.pop(key, None)

    def idle(self) -> list[K]:
        """The sentinels with no probe out: the ones to probe now."""
        return [key for key, s in self._sentinels.items() if s.sent is None]

    def probe(self, key: K, now: float) -> bytes:
        """A probe for sentinel ``key`` goes out now: the payload its echo must carry."""
        sentinel = self._sentinels[key]
        self._count += 1
        sentinel.token = self._count.to_bytes(8, "big")
        sentinel.sent = now
        return sentinel.token

    def echoed(self, key: K, payload: bytes, now: float) -> bool:
        """An echo from ``key`` came in; True if it answered that sentinel's probe."""
        sentinel = self._sentinels.get(key)
        if sentinel is None or sentinel.sent is None or payload != sentinel.token:
            return False
        rtt = now - sentinel.sent
        sentinel.sent = None
        sentinel.base = min(sentinel.base, rtt)
        sentinel.lag = rtt - sentinel.base
        sentinel.sampled = now
        return True

    def lag(self, now: float, among: Callable[[K], bool] | None = None) -> float:
        """The lag in seconds: the lower median of the sentinels' (0 without any); ``among``:
        of those sentinels only (the ones that receive a channel, say)."""
        sentinels = self._sentinels
        values = sorted(
            s.value(now, self.fresh) for key, s in sentinels.items() if among is None or among(key)
        )
        if not values:
            return 0.0
        return values[(len(values) - 1) // 2]
