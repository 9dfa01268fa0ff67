"""This process's subscribers, by channel, and the fan-out.

Fan-out is one synchronous call per publication: encode once (:class:`EncodedPublication`),
then hand the same object to every live subscriber, which pushes the bytes its transport needs
onto its outbox. Subscribers whose history is still being read (RECOVERING) are kept apart, so
the hot loop over live subscribers does no per-subscriber state check; their publications are
buffered in their :class:`~tidings.core.recovery.Recovery` instead.
"""

from __future__ import annotations

from typing import Any, Protocol

from tidings.core.events import Publication
from tidings.core.recovery import Recovery
from tidings.core.wire.frames import EncodedPublication

__all__ = ["Hub", "Subscriber"]


class Subscriber(Protocol):
    """One connection's receiving end. Both calls are synchronous and must not block."""

    def deliver(self, publication: EncodedPublication) -> None: ...

    def control(self, channel: str, message: dict[str, Any]) -> None: ...


class Hub:
    __slots__ = ("_live", "_recovering", "deliveries")

    def __init__(self) -> None:
        self._live: dict[str, dict[Subscriber, None]] = {}
        self._recovering: dict[str, dict[Subscriber, Recovery]] = {}
        self.deliveries = 0

    def add_recovering(self, channel: str, subscriber: Subscriber, recovery: Recovery) -> bool:
        """Start buffering for ``subscriber``; True if the channel had no subscriber here."""
        first = channel not in self._live and channel not in self._recovering
        self._recovering.setdefault(channel, {})[subscriber] = recovery
        return first

    def promote(self, channel: str, subscriber: Subscriber) -> None:
        """Move ``subscriber`` from RECOVERING to LIVE (the caller has merged its recovery)."""
        recovering = self._recovering.get(channel)
        if recovering is not None:
            recovering.pop(subscriber, None)
            if not recovering:
                del self._recovering[channel]
        self._live.setdefault(channel, {})[subscriber] = None

    def remove(self, channel: str, subscriber: Subscriber) -> bool:
        """Forget ``subscriber`` on ``channel``; True if the channel now has none here."""
        for index in (self._live, self._recovering):
            subs = index.get(channel)
            if subs is not None and subscriber in subs:
                del subs[subscriber]
                if not subs:
                    del index[channel]
        return channel not in self._live and channel not in self._recovering

    def fan_out(self, publication: Publication) -> EncodedPublication | None:
        """Deliver ``publication`` to this process's subscribers of its channel."""
        channel = publication.channel
        recovering = self._recovering.get(channel)
        if recovering:
            for recovery in recovering.values():
                recovery.buffer(publication)
        live = self._live.get(channel)
        if not live:
            return None
        encoded = EncodedPublication(publication)
        # A copy: a delivery may overflow an outbox, and its close may unsubscribe.
        targets = tuple(live)
        for subscriber in targets:
            subscriber.deliver(encoded)
        self.deliveries += len(targets)  # not len(live): it shrinks when one unsubscribes
        return encoded

    def control(self, channel: str, message: dict[str, Any]) -> None:
        live = self._live.get(channel)
        if live:
            for subscriber in tuple(live):
                subscriber.control(channel, message)

    def channels(self) -> dict[str, int]:
        """Subscriber counts by channel on this process (live and recovering)."""
        counts = {ch: len(subs) for ch, subs in self._live.items()}
        for ch, subs in self._recovering.items():
            counts[ch] = counts.get(ch, 0) + len(subs)
        return counts

    def subscriber_count(self, channel: str) -> int:
        return len(self._live.get(channel, ())) + len(self._recovering.get(channel, ()))

    def is_recovering(self, channel: str, subscriber: Subscriber) -> bool:
        return subscriber in self._recovering.get(channel, {})

    def has_channel(self, channel: str) -> bool:
        return channel in self._live or channel in self._recovering
