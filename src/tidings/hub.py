"""This process's subscribers, by channel, and the fan-out.

Fan-out is one synchronous call per publication: encode once (:class:`EncodedPublication`),
then hand the same object to every live subscriber, which pushes the bytes its transport needs
onto its outbox. Subscribers whose history is still being read (RECOVERING) are kept apart, so
the hot loop over live subscribers does no per-subscriber state check; their publications are
buffered in their :class:`~tidings.core.recovery.Recovery` instead.

A subscriber whose recovery is merged is CATCHING until the broker's link hands over a
publication after the position the merge left it at: the link can lag behind the history read
(on Redis they are two connections), and what it hands over until then the subscriber already
has (:func:`~tidings.core.recovery.is_new_to`). The first new publication makes it LIVE, before
the live loop runs, so the hot loop stays free of the check; with a link that does not lag, that
is the next publication.

Metrics cost nothing per subscriber: the hub keeps, per channel, how many live subscribers each
transport has (updated on promote/remove), so a fan-out adds its batch sizes to
:attr:`Hub.delivered` with one dict update per transport. One fan-out in ``sample_every`` hands
``on_latency`` to one of its subscribers (``mark_latency``, if the subscriber has it) to observe
publish → write; a subscriber without it is observed at fan-out time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from tidings.core.events import Publication
from tidings.core.position import Position
from tidings.core.recovery import Recovery, is_new_to, notice_concerns
from tidings.core.wire.frames import EncodedPublication

__all__ = ["Hub", "Subscriber"]


class Subscriber(Protocol):
    """One connection's receiving end. Both calls are synchronous and must not block."""

    def deliver(self, publication: EncodedPublication) -> None: ...

    def control(self, channel: str, message: dict[str, Any]) -> None: ...


LatencyObserver = Callable[[int], None]
"""Called with a publication's ``time`` (Unix ms) when it has been written (see the module doc)."""


def transport_of(subscriber: Subscriber) -> str:
    """The subscriber's ``transport`` attribute (``"other"`` for a subscriber without one)."""
    transport = getattr(subscriber, "transport", None)
    return transport if isinstance(transport, str) else "other"


class Hub:
    __slots__ = (
        "_catching",
        "_countdown",
        "_last",
        "_live",
        "_live_transports",
        "_recovering",
        "chain_compression",
        "delivered",
        "deliveries",
        "delta_enabled",
        "generation",
        "on_latency",
        "sample_every",
    )

    def __init__(self) -> None:
        # Live subscribers, each with the broker-link generation it went live in (see control()).
        self._live: dict[str, dict[Subscriber, int]] = {}
        self.generation = 0
        self._recovering: dict[str, dict[Subscriber, Recovery]] = {}
        # CATCHING subscribers: the position their recovery left them at, and their generation.
        self._catching: dict[str, dict[Subscriber, tuple[Position, int]]] = {}
        self.deliveries = 0
        # metrics (see the module docstring)
        self._live_transports: dict[str, dict[str, int]] = {}
        self.delivered: dict[str, int] = {}
        self.on_latency: LatencyObserver | None = None
        self.sample_every = 16
        self._countdown = 1
        # The last publication fanned out on each channel (with live subscribers here), which the
        # next one's delta and chained compressed frame refer to: kept for the channels whose
        # namespace allows deltas, or every channel with chain_compression (the node sets it
        # when WebSocket compression is on).
        self.delta_enabled: Callable[[str], bool] | None = None
        self.chain_compression = False
        self._last: dict[str, EncodedPublication] = {}

    def add_recovering(self, channel: str, subscriber: Subscriber, recovery: Recovery) -> bool:
        """Start buffering for ``subscriber``; True if the channel had no subscriber here."""
        first = channel not in self._live and channel not in self._recovering
        self._recovering.setdefault(channel, {})[subscriber] = recovery
        return first

    def promote(
        self,
        channel: str,
        subscriber: Subscriber,
        position: Position | None = None,
        generation: int | None = None,
    ) -> None:
        """Move ``subscriber`` from RECOVERING on (the caller has merged its recovery).

        ``position``: where the merge left it (the last publication it was given, or the
        position read); it then is CATCHING (module docstring) until a publication after it
        arrives. None makes it LIVE at once. ``generation``: :attr:`generation` when its history
        read began (default: now); see :meth:`control`.
        """
        if generation is None:
            generation = self.generation
        recovering = self._recovering.get(channel)
        if recovering is not None:
            recovering.pop(subscriber, None)
            if not recovering:
                del self._recovering[channel]
        if position is None:
            self._go_live(channel, subscriber, generation)
        else:
            self._catching.setdefault(channel, {})[subscriber] = (position, generation)

    def _go_live(self, channel: str, subscriber: Subscriber, generation: int) -> None:
        live = self._live.setdefault(channel, {})
        if subscriber not in live:
            live[subscriber] = generation
            counts = self._live_transports.setdefault(channel, {})
            transport = transport_of(subscriber)
            counts[transport] = counts.get(transport, 0) + 1

    def remove(self, channel: str, subscriber: Subscriber) -> bool:
        """Forget ``subscriber`` on ``channel``; True if the channel now has none here."""
        live = self._live.get(channel)
        if live is not None and subscriber in live:
            counts = self._live_transports[channel]
            transport = transport_of(subscriber)
            counts[transport] -= 1
            if not counts[transport]:
                del counts[transport]
                if not counts:
                    del self._live_transports[channel]
        index: dict[str, Any]
        for index in (self._live, self._recovering, self._catching):
            subs = index.get(channel)
            if subs is not None and subscriber in subs:
                del subs[subscriber]
                if not subs:
                    del index[channel]
        if self.has_channel(channel):
            return False
        self._last.pop(channel, None)
        return True

    def fan_out(self, publication: Publication) -> EncodedPublication | None:
        """Deliver ``publication`` to this process's subscribers of its channel."""
        channel = publication.channel
        recovering = self._recovering.get(channel)
        if recovering:
            for recovery in recovering.values():
                recovery.buffer(publication)
        catching = self._catching.get(channel)
        if catching:
            self._catch_up(channel, catching, publication)
        live = self._live.get(channel)
        if not live:
            return None
        encoded = EncodedPublication(publication)
        deltas = self.delta_enabled is not None and self.delta_enabled(channel)
        if deltas or self.chain_compression:
            self._chain(channel, encoded)
        # A copy: a delivery may overflow an outbox, and its close may unsubscribe.
        targets = tuple(live)
        delivered = self.delivered  # counted first: a subscriber may leave during the loop
        for transport, count in self._live_transports.get(channel, {}).items():
            delivered[transport] = delivered.get(transport, 0) + count
        for subscriber in targets:
            subscriber.deliver(encoded)
        if self._last.get(channel) is encoded:
            if not deltas and not encoded.ws_compressed:
                # no subscriber here compressed it: what the next one could refer to is not
                # worth a publication kept per channel (10,000 idle channels, 0.3 KiB of each)
                del self._last[channel]
            else:
                encoded.fanned_out()  # kept while the channel is idle: only what is referred to
        self.deliveries += len(targets)  # not len(live): it shrinks when one unsubscribes
        self._countdown -= 1
        if self._countdown <= 0 and self.on_latency is not None:
            self._countdown = self.sample_every
            self._sample(targets[-1], publication.time)
        return encoded

    def _chain(self, channel: str, encoded: EncodedPublication) -> None:
        """Link ``encoded`` to the channel's previous publication if it directly precedes it
        (its delta and chained frame are computed from it on first use); then ``encoded`` is the
        channel's last."""
        last = self._last.get(channel)
        if last is not None:
            last.forget_previous()  # its fan-out is over: nothing reads its delta any more
            pub, before = encoded.publication, last.publication
            if before.offset == pub.offset - 1 and before.epoch == pub.epoch:
                encoded.previous = last
        self._last[channel] = encoded

    def _catch_up(
        self, channel: str, catching: dict[Subscriber, tuple[Position, int]], publication: Publication
    ) -> None:
        """Make LIVE the catching subscribers ``publication`` is new to; drop it for the rest."""
        for subscriber, (position, generation) in tuple(catching.items()):
            if is_new_to(position, publication):
                del catching[subscriber]
                self._go_live(channel, subscriber, generation)
        if not catching and self._catching.get(channel) is catching:
            del self._catching[channel]

    def _sample(self, subscriber: Subscriber, time_ms: int) -> None:
        assert self.on_latency is not None
        mark = getattr(subscriber, "mark_latency", None)
        if mark is not None:
            mark(time_ms, self.on_latency)
        else:
            self.on_latency(time_ms)

    def control(self, channel: str, message: dict[str, Any], *, before_generation: int | None = None) -> None:
        """Hand a non-history message to the channel's live subscribers.

        ``before_generation``: only to those whose history read began before it. A gap notice
        for what the node missed while its broker link was down concerns the subscribers that
        read the store before the link went down; one that read it since (the link still down,
        or back) saw the store as it is now, and the notice (about the link's own position)
        would tell it again of an epoch change it already knows, or make it skip a publication
        it has yet to receive.
        """
        catching = self._catching.get(channel)
        if catching:
            for subscriber, (position, generation) in tuple(catching.items()):
                if before_generation is not None and generation >= before_generation:
                    continue
                if not notice_concerns(position, message):
                    continue
                if message.get("op") == "gap":  # told of a loss: it continues from the present
                    del catching[subscriber]
                    self._go_live(channel, subscriber, generation)
                else:
                    subscriber.control(channel, message)
            if not catching and self._catching.get(channel) is catching:
                del self._catching[channel]
        live = self._live.get(channel)
        if not live:
            return
        for subscriber, generation in tuple(live.items()):
            if before_generation is None or generation < before_generation:
                subscriber.control(channel, message)

    def channels(self) -> dict[str, int]:
        """Subscriber counts by channel on this process (live and recovering)."""
        counts = {ch: len(subs) for ch, subs in self._live.items()}
        for index in (self._recovering, self._catching):
            for ch, subs in index.items():
                counts[ch] = counts.get(ch, 0) + len(subs)
        return counts

    def subscriptions_by_transport(self) -> dict[str, int]:
        """Subscriptions on this process by transport (every state); O(recovering + catching)."""
        totals: dict[str, int] = {}
        for counts in self._live_transports.values():
            for transport, count in counts.items():
                totals[transport] = totals.get(transport, 0) + count
        index: dict[str, Any]
        for index in (self._recovering, self._catching):
            for subs in index.values():
                for subscriber in subs:
                    transport = transport_of(subscriber)
                    totals[transport] = totals.get(transport, 0) + 1
        return totals

    def subscriber_count(self, channel: str) -> int:
        return (
            len(self._live.get(channel, ()))
            + len(self._recovering.get(channel, ()))
            + len(self._catching.get(channel, ()))
        )

    def is_recovering(self, channel: str, subscriber: Subscriber) -> bool:
        return subscriber in self._recovering.get(channel, {})

    def has_channel(self, channel: str) -> bool:
        return channel in self._live or channel in self._recovering or channel in self._catching
