"""The Node: composition root of one tidings process.

It owns the broker, the presence manager and the hub, and has the lifecycle::

    async with Node(settings) as node:
        await node.publish("chat:lobby", {"text": "hi"})

Transports call :meth:`Node.subscribe` / :meth:`Node.unsubscribe` for their subscribers and
register their connections (for ``/api/disconnect``, ``/api/info`` and draining).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from tidings.auth.security import Security
from tidings.brokers.base import Broker, PublishResult
from tidings.brokers.memory import MemoryBroker
from tidings.core.channels import validate_channel
from tidings.core.commands import validate_event_name
from tidings.core.disconnect import Disconnect
from tidings.core.events import Gap, Page, Publication
from tidings.core.permissions import NamespaceOptions
from tidings.core.position import Position
from tidings.core.recovery import Recovered, Recovery
from tidings.hub import Hub, Subscriber
from tidings.presence.base import ClientInfo, PresenceManager
from tidings.presence.memory import MemoryPresence
from tidings.settings import Settings

__all__ = ["Connection", "Node", "make_broker", "make_presence"]

log = logging.getLogger("tidings.node")

PRESENCE_TTL = 60.0


class Connection(Protocol):
    """A live client connection, as the node sees it (any transport)."""

    @property
    def client_id(self) -> str: ...

    @property
    def transport(self) -> str: ...

    @property
    def user(self) -> str: ...

    def disconnect(self, reason: Disconnect) -> None:
        """Close the connection with ``reason`` (synchronous; the transport does the I/O)."""


def make_broker(settings: Settings) -> Broker:
    """The broker named by ``settings.broker``."""
    url = settings.broker
    if url == "memory":
        return MemoryBroker()
    if url.startswith("sqlite:///"):
        from tidings.brokers.sqlite import SQLiteBroker  # type: ignore[import-not-found,unused-ignore]

        broker: Broker = SQLiteBroker(url.removeprefix("sqlite:///"))
        return broker
    if url.startswith(("redis://", "rediss://", "redis-cluster://")):
        from tidings.brokers.redis import RedisBroker  # type: ignore[import-not-found,unused-ignore]

        redis_broker: Broker = RedisBroker(url)
        return redis_broker
    raise ValueError(f"unknown broker {url!r}")


def make_presence(settings: Settings, broker: Broker) -> PresenceManager:
    factory = getattr(broker, "presence_manager", None)
    if factory is not None:
        presence: PresenceManager = factory()
        return presence
    return MemoryPresence()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Node:
    """See the module docstring. Not reusable: start once, stop once."""

    def __init__(self, settings: Settings | None = None, *, broker: Broker | None = None,
                 presence: PresenceManager | None = None) -> None:
        self.settings = settings if settings is not None else Settings()
        self.namespaces = self.settings.namespace_rules()
        self.broker = broker if broker is not None else make_broker(self.settings)
        self.presence = presence if presence is not None else make_presence(
            self.settings, self.broker)
        self.hub = Hub()
        self.security = Security(self.settings)
        self.connections: dict[str, Connection] = {}
        self.started_at = 0.0
        self.draining = False
        self.broker_available = True
        self.publications = 0
        self._interest: dict[str, asyncio.Future[None]] = {}
        self._joined: dict[tuple[str, str], ClientInfo] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.on_publish: list[Callable[[Publication], None]] = []
        # Awaited in publish() after the broker publish and before publish() returns (the
        # webhook queue makes its deliveries durable here). Duplicates run them again: a retry
        # after a hook failed must still enqueue, and hooks are idempotent by publication id.
        self.publish_hooks: list[Callable[[Publication], Awaitable[None]]] = []

    # lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.broker.start(self)
        self.started_at = time.time()
        self.spawn(self._refresh_presence())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.presence.close()
        await self.broker.close()

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run ``coro`` as a background task owned by the node (cancelled at stop)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # BrokerHandler ---------------------------------------------------------------------------

    def on_publication(self, publication: Publication) -> None:
        self.hub.fan_out(publication)

    def on_control(self, channel: str, message: dict[str, Any]) -> None:
        self.hub.control(channel, message)

    def on_broker_state(self, available: bool) -> None:
        if available != self.broker_available:
            log.warning("broker %s", "reachable again" if available else "unreachable")
        self.broker_available = available

    # publishing --------------------------------------------------------------------------------

    def options(self, channel: str) -> NamespaceOptions:
        return self.namespaces.for_channel(channel)

    async def publish(self, channel: str, data: Any, *, event: str = "message",
                      idempotency_key: str | None = None) -> PublishResult:
        """Append to history and fan out; returns the publication (or the earlier duplicate).

        Raises BadRequest for a bad channel or event name, Unavailable when the broker is down.
        """
        validate_channel(channel)
        validate_event_name(event)
        result = await self.broker.publish(
            channel, data, event=event, options=self.options(channel),
            idempotency_key=idempotency_key, publication_id=uuid.uuid4().hex, now_ms=now_ms(),
        )
        if not result.duplicate:
            self.publications += 1
            for hook in self.on_publish:
                hook(result.publication)
        for async_hook in self.publish_hooks:
            await async_hook(result.publication)
        return result

    # subscribing -----------------------------------------------------------------------------

    async def _ensure_interest(self, channel: str) -> None:
        future = self._interest.get(channel)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._interest[channel] = future
            try:
                await self.broker.subscribe(channel)
            except BaseException as exc:
                del self._interest[channel]
                future.set_exception(exc)
                future.exception()  # retrieved: waiters re-raise it themselves
                raise
            future.set_result(None)
        else:
            await asyncio.shield(future)

    async def subscribe(self, subscriber: Subscriber, channel: str, since: Position | None,
                        on_ready: Callable[[Recovered], None],
                        recovery: Recovery | None = None) -> Recovered:
        """Subscribe ``subscriber`` to ``channel``, resuming after ``since`` if given.

        ``on_ready`` is called synchronously with the merged result right before the subscriber
        goes live, so it can queue the reply and the recovered publications ahead of any live
        one. On failure the subscriber is removed again and the error propagates.
        """
        recovery = recovery if recovery is not None else Recovery(channel, since)
        self.hub.add_recovering(channel, subscriber, recovery)
        try:
            await self._ensure_interest(channel)
            answer = await self.read_since(channel, since)
        except BaseException:
            await self.unsubscribe(subscriber, channel)
            raise
        result = recovery.finish(answer)
        if not self.hub.is_recovering(channel, subscriber):
            return result  # unsubscribed meanwhile
        on_ready(result)
        self.hub.promote(channel, subscriber)
        return result

    async def read_since(self, channel: str, since: Position | None) -> Page | Gap | Position:
        """The answer a Recovery merges: a Page/Gap after ``since``, else the position."""
        if since is None:
            return await self.broker.position(channel)
        options = self.options(channel)
        limit = max(1, options.history_size)
        return await self.broker.since(channel, since, limit, options, now_ms())

    async def unsubscribe(self, subscriber: Subscriber, channel: str) -> None:
        if self.hub.remove(channel, subscriber) and channel in self._interest:
            future = self._interest.pop(channel)
            if future.done() and future.exception() is None:
                with contextlib.suppress(Exception):
                    await self.broker.unsubscribe(channel)

    # history and presence --------------------------------------------------------------------

    async def history(self, channel: str, since: Position | None, limit: int
                      ) -> tuple[list[Publication], Position, Gap | None]:
        """Publications after ``since`` (or the latest ``limit``), the position, and any gap."""
        options = self.options(channel)
        if since is None:
            pubs, position = await self.broker.latest(channel, limit, options, now_ms())
            return pubs, position, None
        answer = await self.broker.since(channel, since, limit, options, now_ms())
        if isinstance(answer, Gap):
            return answer.publications, answer.position, answer
        return answer.publications, answer.position, None

    async def join(self, channel: str, client: ClientInfo) -> None:
        self._joined[(channel, client.client)] = client
        await self.presence.add(channel, client, PRESENCE_TTL, time.time())
        if self.options(channel).join_leave:
            await self.broker.publish_control(channel, {"op": "join", "channel": channel,
                                                        "client": client.to_dict()})

    async def leave(self, channel: str, client: ClientInfo) -> None:
        if self._joined.pop((channel, client.client), None) is None:
            return
        await self.presence.remove(channel, client.client)
        if self.options(channel).join_leave:
            await self.broker.publish_control(channel, {"op": "leave", "channel": channel,
                                                        "client": client.to_dict()})

    async def presence_of(self, channel: str) -> list[ClientInfo]:
        return await self.presence.list(channel, time.time())

    async def _refresh_presence(self) -> None:
        while True:
            await asyncio.sleep(PRESENCE_TTL / 3)
            now = time.time()
            for (channel, _), client in list(self._joined.items()):
                with contextlib.suppress(Exception):
                    await self.presence.add(channel, client, PRESENCE_TTL, now)

    # connections -----------------------------------------------------------------------------

    def register(self, connection: Connection) -> None:
        self.connections[connection.client_id] = connection

    def unregister(self, connection: Connection) -> None:
        self.connections.pop(connection.client_id, None)

    def disconnect_user(self, user: str, reason: Disconnect) -> int:
        """Close every connection of ``user``; returns how many."""
        found = [c for c in self.connections.values() if c.user == user]
        for connection in found:
            connection.disconnect(reason)
        return len(found)

    def connection_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for connection in self.connections.values():
            counts[connection.transport] = counts.get(connection.transport, 0) + 1
        return counts
