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
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Hashable

from tidings.core.flow import LagGauge
from tidings.settings import FlowSettings

__all__ = ["PublishFlow"]


class PublishFlow:
    """The gauge of one node and the publishers waiting for it."""

    __slots__ = ("_waiters", "enabled", "gauge", "held", "interval", "max_hold", "target")

    def __init__(self, settings: FlowSettings) -> None:
        self.enabled = settings.enabled
        self.target = settings.lag_target
        self.max_hold = settings.max_hold
        # A probe every half target: a lag over the target is seen within half of it.
        self.interval = settings.lag_target / 2
        self.gauge: LagGauge[Hashable] = LagGauge(
            sentinels=settings.sentinels, term=settings.sentinel_term,
            fresh=max(4 * settings.lag_target, 0.05))
        self._waiters: list[asyncio.Future[None]] = []
        self.held = 0  # publishes whose answer waited (tidings_publishes_held_total)

    def lagging(self) -> bool:
        """Whether a publish's answer would wait now (cheap: no sentinels, no clock read)."""
        if not self.enabled or not len(self.gauge):
            return False
        return self.gauge.lag(asyncio.get_running_loop().time()) > self.target

    def lag(self) -> float:
        """The lag now, in seconds (0 outside the node's event loop: the probes' clock)."""
        try:
            now = asyncio.get_running_loop().time()
        except RuntimeError:
            return 0.0
        return self.gauge.lag(now)

    async def hold(self) -> None:
        """Return once the deliveries lag at most the target, or after ``max_hold``."""
        if not self.lagging():
            return
        loop = asyncio.get_running_loop()
        self.held += 1
        waiter = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(self.max_hold, _release, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            with contextlib.suppress(ValueError):  # not there once all were released
                self._waiters.remove(waiter)

    def echoed(self, key: Hashable, payload: bytes, now: float) -> bytes | None:
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
        if gauge.lag(now) <= self.target:
            self._waiters = []
            for waiter in waiters:
                _release(waiter)
            return None
        return gauge.probe(key, now)


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
