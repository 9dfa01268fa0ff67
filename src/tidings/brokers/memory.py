"""The in-memory broker: history in this process, one fresh epoch per start. Nothing to install.

Publish is atomic because it runs without an await between assigning the offset, appending to
history and calling the handler.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from tidings.brokers.base import BrokerHandler, PublishResult
from tidings.core.events import Gap, Page, Publication
from tidings.core.history import History, resolve_since
from tidings.core.permissions import NamespaceOptions
from tidings.core.position import Position, new_epoch
from tidings.core.wire.frames import SPLICE_FROM

__all__ = ["MemoryBroker"]


class MemoryBroker:
    def __init__(self, idempotency_window: float = 300.0, idempotency_max: int = 100_000) -> None:
        self.epoch = new_epoch()
        self._histories: dict[str, History] = {}
        self._handler: BrokerHandler | None = None
        self._idempotency: OrderedDict[tuple[str, str], tuple[Publication, int]] = OrderedDict()
        self._idem_window_ms = int(idempotency_window * 1000)
        self._idem_max = idempotency_max

    async def start(self, handler: BrokerHandler) -> None:
        self._handler = handler

    async def close(self) -> None:
        self._handler = None

    def _history(self, channel: str, options: NamespaceOptions) -> History:
        history = self._histories.get(channel)
        if history is None:
            history = History(channel, self.epoch, options.history_size, options.history_ttl)
            self._histories[channel] = history
        else:
            history.size, history.ttl = options.history_size, options.history_ttl
        return history

    def _existing(self, channel: str, options: NamespaceOptions) -> History | None:
        """The channel's history if it was ever published to. Reads never make an entry, so a
        client reading names nobody uses grows nothing (a never-published channel is at
        ``(self.epoch, 0)``, which stays valid for its first publication)."""
        history = self._histories.get(channel)
        if history is not None:
            history.size, history.ttl = options.history_size, options.history_ttl
        return history

    def _remembered(self, channel: str, key: str, now_ms: int) -> Publication | None:
        horizon = now_ms - self._idem_window_ms
        idem = self._idempotency
        while idem:
            first = next(iter(idem.values()))
            if first[1] >= horizon and len(idem) <= self._idem_max:
                break
            idem.popitem(last=False)
        found = idem.get((channel, key))
        return found[0] if found is not None else None

    async def publish(
        self,
        channel: str,
        data: Any,
        *,
        event: str,
        options: NamespaceOptions,
        idempotency_key: str | None = None,
        publication_id: str,
        now_ms: int,
        data_json: bytes | None = None,
    ) -> PublishResult:
        if idempotency_key is not None:
            seen = self._remembered(channel, idempotency_key, now_ms)
            if seen is not None:
                return PublishResult(seen, duplicate=True)
        history = self._history(channel, options)
        offset = history.next_offset()
        publication = Publication(channel, offset, history.epoch, publication_id, now_ms, event, data)
        history.append(publication, now_ms)  # without data_json: history's memory as before
        if idempotency_key is not None:
            self._idempotency[(channel, idempotency_key)] = (publication, now_ms)
        if self._handler is not None:
            if data_json is not None and len(data_json) >= SPLICE_FROM:  # the fan-out splices
                publication = Publication(
                    channel, offset, history.epoch, publication_id, now_ms, event, data, data_json=data_json
                )
            self._handler.on_publication(publication)
        return PublishResult(publication)

    async def publish_control(self, channel: str, message: dict[str, Any]) -> None:
        if self._handler is not None:
            self._handler.on_control(channel, message)

    async def subscribe(self, channel: str) -> None:
        return None

    async def unsubscribe(self, channel: str) -> None:
        return None

    async def since(
        self, channel: str, since: Position, limit: int, options: NamespaceOptions, now_ms: int
    ) -> Page | Gap:
        history = self._existing(channel, options)
        if history is None:
            return resolve_since(channel, since, Position(self.epoch, 0), [], limit)
        return history.since(since, limit, now_ms)

    async def latest(
        self, channel: str, limit: int, options: NamespaceOptions, now_ms: int
    ) -> tuple[list[Publication], Position]:
        history = self._existing(channel, options)
        if history is None:
            return [], Position(self.epoch, 0)
        return history.latest(limit, now_ms), history.position

    async def position(self, channel: str) -> Position:
        history = self._histories.get(channel)
        return history.position if history is not None else Position(self.epoch, 0)

    async def channels(self) -> dict[str, Position]:
        return {name: h.position for name, h in self._histories.items() if h.offset > 0}

    async def ping(self) -> None:
        return None
