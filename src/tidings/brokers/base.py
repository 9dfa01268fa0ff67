"""The Broker protocol: the seam between a node and where publications live and travel.

Contract every broker keeps (the conformance suite in tests/brokers/ checks it):

- ``publish`` assigns the channel's next offset and appends to history **atomically** with
  handing the publication to every node's :class:`BrokerHandler` (this node's included), so two
  publishers never get the same offset and no offset is skipped. Handlers receive each channel's
  publications in offset order. An ``idempotency_key`` seen before (within the broker's window)
  returns the original publication with ``duplicate=True`` and publishes nothing.
- ``subscribe(channel)`` registers this node's interest; once it returns, every later
  publication on the channel reaches the handler. Nodes call it once per channel, not per client.
- ``since`` answers a resume with a Page or a Gap (never raises for lost history); ``position``
  is the channel's current ``(epoch, offset)`` (offset 0 for a channel never published to).
- The epoch of a channel changes whenever its history is lost (a restarted in-memory node, a
  flushed Redis); offsets restart at 1 in a new epoch.
- Any failure to reach the backing store raises :class:`tidings.exceptions.Unavailable`, with
  nothing half-written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from tidings.core.events import Gap, Page, Publication
from tidings.core.permissions import NamespaceOptions
from tidings.core.position import Position

__all__ = ["Broker", "BrokerHandler", "PublishResult"]


class BrokerHandler(Protocol):
    """What a node gives its broker: synchronous callbacks, called on the node's event loop."""

    def on_publication(self, publication: Publication) -> None: ...

    def on_control(self, channel: str, message: dict[str, Any]) -> None:
        """A presence join/leave (or other non-history message) for the channel's subscribers.

        A gap notice with ``"reconnect": true`` is about what the node missed while its link
        to the store was down (reported after ``on_broker_state(True)``)."""

    def on_broker_state(self, available: bool) -> None:
        """The backing store became unreachable (False) or reachable again (True)."""


@dataclass(frozen=True, slots=True)
class PublishResult:
    publication: Publication
    duplicate: bool = False


class Broker(Protocol):
    async def start(self, handler: BrokerHandler) -> None: ...

    async def close(self) -> None: ...

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
        """Append ``data`` to the channel's history and hand it to the handler.

        ``data_json``: ``data`` as compact JSON, when the caller has it (``Node.publish`` does,
        from its check), so the broker need not encode it again; the publication handed to the
        handler carries it for the fan-out."""
        ...

    async def publish_control(self, channel: str, message: dict[str, Any]) -> None: ...

    async def subscribe(self, channel: str) -> None: ...

    async def unsubscribe(self, channel: str) -> None: ...

    async def since(
        self, channel: str, since: Position, limit: int, options: NamespaceOptions, now_ms: int
    ) -> Page | Gap: ...

    async def latest(
        self, channel: str, limit: int, options: NamespaceOptions, now_ms: int
    ) -> tuple[list[Publication], Position]: ...

    async def position(self, channel: str) -> Position: ...

    async def channels(self) -> dict[str, Position]:
        """Channels that have a position (published to and not expired), with their positions."""
        ...

    async def ping(self) -> None:
        """Raise :class:`tidings.exceptions.Unavailable` unless the backing store answers."""
