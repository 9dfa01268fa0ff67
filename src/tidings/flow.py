"""Publisher flow control: a publish is answered once the node's deliveries keep up.

Without it, a publisher that is answered at once can publish faster than the subscribers read;
the surplus waits in the clients' receive buffers, and every delivery behind it is late (and in
the end the outbox limit cuts clients off). With it, when the node's deliveries lag more than
``flow.lag_target`` seconds (:mod:`tidings.core.flow` says how that is measured), the answer to a
publish waits until they are back under it, or ``flow.max_hold`` seconds at most. The
publication itself is accepted, stored and fanned out at once: only the answer waits, so a
publisher that waits for its answers slows to the pace its subscribers read at, and nothing is
dropped.

The lag is measured by WebSocket pings on the fast engine's connections (:mod:`tidings.server.
fast.protocol` sends them); a node with no such connection has no measure and holds nothing.

A publish waits for the lag of the sentinels that receive its channel, not of all of them:
clients that stop reading show a lag of their own, which the node cannot tell from its own
falling behind, so a stalled client could otherwise hold every publisher of the node (30 such
subscribers took serial publishes from 636/s to 10/s). Now they hold only the publishers of the
channels they subscribe to, whose publications they are failing to read; the outbox limit then
cuts them off (docs/topics/flow.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Protocol

from tidings.core.flow import LagGauge
from tidings.settings import FlowSettings

__all__ = ["PublishFlow", "Sentinel"]


class Sentinel(Protocol):
    """A connection the gauge may probe."""

    def receives(self, channel: str) -> bool:
        """Whether publications on ``channel`` are delivered to it."""
        ...


Channels = Collection[str] | None
"""The channels a publish went to (None: the node as a whole)."""


class PublishFlow:
    """The gauge of one node and the publishers waiting for it."""

    __slots__ = ("_waiters", "enabled", "gauge", "held", "interval", "max_hold", "target")

    def __init__(self, settings: FlowSettings) -> None:
        self.enabled = settings.enabled
        self.target = settings.lag_target
        self.max_hold = settings.max_hold
        # A probe every half target: a lag over the target is seen within half of it.
        self.interval = settings.lag_target / 2
        self.gauge: LagGauge[Sentinel] = LagGauge(
            sentinels=settings.sentinels,
            term=settings.sentinel_term,
            fresh=max(4 * settings.lag_target, 0.05),
        )
        self._waiters: dict[asyncio.Future[None], Channels] = {}
        self.held = 0  # publishes whose answer waited (tidings_publishes_held_total)

    def lagging(self, channels: Channels = None) -> bool:
        """Whether a publish to ``channels`` would wait now (cheap: no sentinels, no clock read)."""
        if not self.enabled or not len(self.gauge):
            return False
        return self._lag(asyncio.get_running_loop().time(), channels) > self.target

    def _lag(self, now: float, channels: Channels) -> float:
        if channels is None:
            return self.gauge.lag(now)
        return self.gauge.lag(now, lambda sentinel: any(sentinel.receives(c) for c in channels))

    def lag(self) -> float:
        """The node's lag now, in seconds (0 outside the node's event loop: the probes' clock)."""
        try:
            now = asyncio.get_running_loop().time()
        except RuntimeError:
            return 0.0
        return self.gauge.lag(now)

    async def hold(self, channels: Channels = None) -> None:
        """Return once the deliveries of ``channels`` lag at most the target, or after
        ``max_hold``."""
        if not self.lagging(channels):
            return
        loop = asyncio.get_running_loop()
        self.held += 1
        waiter = loop.create_future()
        self._waiters[waiter] = channels
        timer = loop.call_later(self.max_hold, _release, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiters.pop(waiter, None)

    def echoed(self, key: Sentinel, payload: bytes, now: float) -> bytes | None:
        """A pong from ``key``: count it; the next probe's payload if one should go at once.

        While publishers wait, a sentinel whose echo is back is probed again right away, so a
        lag that has gone is seen without waiting for the next round (no data may be flowing:
        the publishers are the ones waiting).
        """
        gauge = self.gauge
        if not gauge.echoed(key, payload, now):
            return None
        waiters = self._waiters
        if not waiters:
            return None
        for waiter, channels in list(waiters.items()):
            if self._lag(now, channels) <= self.target:
                del waiters[waiter]
                _release(waiter)
        if not waiters:
            return None
        return gauge.probe(key, now)


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
