"""The Node: composition root of one tidings process.

It owns the broker, the presence manager and the hub, and has the lifecycle::

    async with Node(settings) as node:
        await node.publish("chat:lobby", {"text": "hi"})

Transports call :meth:`Node.subscribe` / :meth:`Node.unsubscribe` for their subscribers and
register their connections (for ``/api/disconnect``, ``/api/info`` and draining).

Draining (graceful shutdown, :meth:`Node.drain`): ``draining`` becomes true, so ``/readyz``
answers 503 and transports refuse new clients (WebSocket: close 1012; HTTP transports: 503 with
``Retry-After``); every registered connection gets ``disconnect(SERVICE_RESTART)``; the drain
hooks run (the webhook dispatcher finishes its in-flight attempts); then :meth:`Node.stop`
closes the broker, which flushes what it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from tidings.auth.security import Security
from tidings.brokers.base import Broker, PublishResult
from tidings.brokers.memory import MemoryBroker
from tidings.core.channels import validate_channel
from tidings.core.commands import validate_event_name
from tidings.core.disconnect import CloseCode, Disconnect, disconnect
from tidings.core.events import Gap, Page, Publication
from tidings.core.payload import DataRules
from tidings.core.permissions import NamespaceOptions
from tidings.core.position import Position
from tidings.core.presence import ClientInfo
from tidings.core.recovery import Recovered, Recovery
from tidings.flow import PublishFlow
from tidings.hub import Hub, Subscriber
from tidings.ids import random_id
from tidings.logs import access_level, log_event
from tidings.metrics import Metrics
from tidings.presence.base import PresenceManager
from tidings.presence.memory import MemoryPresence
from tidings.proxy import Proxies
from tidings.settings import Settings

__all__ = ["Connection", "Node", "make_broker", "make_presence"]

log = logging.getLogger("tidings.node")
connection_log = logging.getLogger("tidings.connections")

PRESENCE_TTL = 60.0
_ANNOUNCEMENTS = frozenset({"join", "leave"})
# A poll is a connection for one request: its lines are access lines (tidings.logs.access_level).
_REQUEST_SCOPED = frozenset({"longpoll", "poll"})


def _line_level(connection: Connection, access_log: bool) -> int | None:
    """The level of a connection's open and close lines, None when they would not be written."""
    if connection.transport in _REQUEST_SCOPED:
        return access_level(access_log)
    return logging.INFO if connection_log.isEnabledFor(logging.INFO) else None


class Connection(Protocol):
    """A live client connection, as the node sees it (any transport).

    The contract of ``disconnect`` with ``SERVICE_RESTART`` (draining), which every transport
    keeps: tell the client to come back and resume, then end the connection soon (the node waits
    for :meth:`Node.unregister`, bounded by ``drain_timeout``):

    - WebSocket: close frame 1012 with the reason "service restart: reconnect and resume";
    - SSE: the stream already began with ``retry:``; send the ``disconnect`` notice and end the
      response, so the EventSource reconnects (with ``Last-Event-ID``) after ``retry`` ms;
    - HTTP streaming: a ``{"op":"disconnect","code":1012,"reconnect":true}`` line, then end;
    - long polling: answer the held poll now (what it has, possibly nothing, with its cursor).

    Optional, for the ``open``/``close`` log lines and ``tidings_disconnects_total``: an
    ``address`` attribute (the client's IP) and a ``close_info()`` method returning
    ``(code, reason, by)`` with ``by`` = ``"server"`` | ``"client"``; without it, a ``closing``
    attribute holding the :class:`Disconnect` the server chose (None: the client ended it).
    """

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
        # Each broker's module is imported only when it is the one configured: the Redis broker's
        # client library alone is about a second of imports a memory or SQLite node never needs.
        from tidings.brokers.sqlite import SQLiteBroker

        broker: Broker = SQLiteBroker(url.removeprefix("sqlite:///"))
        return broker
    if url.startswith(("redis://", "rediss://", "redis-cluster://")):
        from tidings.brokers.redis import RedisBroker  # here: see above

        redis_broker: Broker = RedisBroker(url)
        return redis_broker
    raise ValueError(f"unknown broker {url!r}")


def make_presence(settings: Settings, broker: Broker) -> PresenceManager:
    factory = getattr(broker, "presence_manager", None)
    if factory is not None:
        presence: PresenceManager = factory()
        return presence
    return MemoryPresence()


def close_details(connection: Connection) -> tuple[int | None, str, str]:
    """``(code, reason, by)`` of a connection that is ending (see :class:`Connection`)."""
    info = getattr(connection, "close_info", None)
    if callable(info):
        details: tuple[int | None, str, str] = info()
        return details
    closing = getattr(connection, "closing", None)
    if isinstance(closing, Disconnect):
        return int(closing.code), closing.reason, "server"
    return None, "", "client"


def _code_name(code: int) -> str:
    try:
        return CloseCode(code).name.lower()
    except ValueError:
        return str(code)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Node:
    """See the module docstring. Not reusable: start once, stop once."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        broker: Broker | None = None,
        presence: PresenceManager | None = None,
    ) -> None:
        self.settings = settings if settings is not None else Settings()
        self.namespaces = self.settings.namespace_rules()
        self.data_rules = DataRules(self.settings.limits.max_json_depth)
        self.broker = broker if broker is not None else make_broker(self.settings)
        self.presence = presence if presence is not None else make_presence(self.settings, self.broker)
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
        # ops: metrics (tidings.metrics) and draining (drain())
        self.flow = PublishFlow(self.settings.flow)
        self.metrics = Metrics(self)
        self.metrics.instrument_broker(self.broker)
        #: The proxies to the application's backend (``[proxy.*]``), one client pool.
        self.proxies = Proxies(self.settings.proxy, self.metrics)
        self.hub.on_latency = self.metrics.observe_since
        self.hub.sample_every = self.metrics.latency_sample_every
        if self.namespaces.default.delta or any(o.delta for o in self.namespaces.options.values()):
            namespaces = self.namespaces
            self.hub.delta_enabled = lambda channel: namespaces.for_channel(channel).delta
        # compressed WebSocket frames chained to the channel's previous publication
        self.hub.chain_compression = self.settings.websocket.enabled and self.settings.websocket.compression
        # Awaited by drain() after the clients were told to leave (e.g. the webhook dispatcher
        # finishing in-flight attempts); each gets the seconds left of the drain timeout.
        self.drain_hooks: list[Callable[[float], Awaitable[None]]] = []
        self._unregistered = asyncio.Event()
        self._opened: dict[str, float] = {}

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
        await self.proxies.aclose()
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
        if message.get("op") in _ANNOUNCEMENTS and (
            self.hub.subscriber_count(channel) > self.options(channel).join_leave_max_subscribers
        ):
            # Each join goes to every subscriber: N subscribers joining cost N²/2 frames. Past
            # the cap a node passes none on, so a join storm costs it O(1) per subscriber.
            return
        if message.get("reconnect"):
            # What the node missed while its broker link was down concerns the subscribers
            # that were live then, not those that read their own history since (Hub.control).
            message = {k: v for k, v in message.items() if k != "reconnect"}
            self.hub.control(channel, message, before_generation=self.hub.generation)
        else:
            self.hub.control(channel, message)

    def on_broker_state(self, available: bool) -> None:
        if available != self.broker_available:
            log.warning("broker %s", "reachable again" if available else "unreachable")
            if not available:
                # Reads that begin from now on see the store as the outage leaves it (other
                # connections may reach it before the link does): the link's notices when it
                # is back are not for them (Hub.control).
                self.hub.generation += 1
        self.broker_available = available

    # publishing --------------------------------------------------------------------------------

    def options(self, channel: str) -> NamespaceOptions:
        return self.namespaces.for_channel(channel)

    async def publish(
        self,
        channel: str,
        data: Any,
        *,
        event: str = "message",
        idempotency_key: str | None = None,
        hold: bool = True,
    ) -> PublishResult:
        """Append to history and fan out; returns the publication (or the earlier duplicate).

        Before it returns it waits while the node's deliveries lag (publisher flow control,
        :mod:`tidings.flow`), unless ``hold`` is false: a caller that publishes several times
        for one request then waits once itself, with ``await node.flow.hold(channels)``.

        Raises BadRequest for a bad channel or event name or data that is not JSON or nests
        deeper than ``limits.max_json_depth``, TooLarge for data over the namespace's
        ``max_message_bytes``, Unavailable when the broker is down. Every publish path (WebSocket,
        server API, broadcast, inbound webhooks) comes through here, so nothing the broker stores
        is undeliverable (:mod:`tidings.core.payload`).
        """
        options, data_json = self._check(channel, data, event)
        return await self._store(channel, data, data_json, event, options, idempotency_key, hold)

    def _check(self, channel: str, data: Any, event: str) -> tuple[NamespaceOptions, bytes]:
        """What :meth:`publish` refuses, raised before anything is stored; else the channel's
        options and ``data`` as compact JSON."""
        validate_channel(channel)
        validate_event_name(event)
        options = self.options(channel)
        return options, self.data_rules.encode(channel, data, options)

    async def broadcast(
        self, channels: list[str], data: Any, *, event: str = "message", idempotency_key: str | None = None
    ) -> list[PublishResult]:
        """:meth:`publish` to each channel, all or nothing as far as the checks go.

        Every channel is checked (name, event, data against its namespace's limits) before any
        is stored, so a refusal stores nothing. Waits once for flow control, at the end.
        """
        if not channels:
            return []
        _, data_json = self._check(channels[0], data, event)  # one encode for every channel
        checked = []
        for channel in channels:
            validate_channel(channel)
            options = self.options(channel)
            self.data_rules.check_size(channel, data_json, options)
            checked.append(options)
        results = [
            await self._store(channel, data, data_json, event, options, idempotency_key, False)
            for channel, options in zip(channels, checked, strict=True)
        ]
        if self.flow.lagging(channels):
            await self.flow.hold(channels)
        return results

    async def _store(
        self,
        channel: str,
        data: Any,
        data_json: bytes,
        event: str,
        options: NamespaceOptions,
        idempotency_key: str | None,
        hold: bool,
    ) -> PublishResult:
        result = await self.broker.publish(
            channel,
            data,
            event=event,
            options=options,
            idempotency_key=idempotency_key,
            publication_id=random_id(),
            now_ms=now_ms(),
            data_json=data_json,
        )
        if not result.duplicate:
            self.publications += 1
            for hook in self.on_publish:
                hook(result.publication)
        for async_hook in self.publish_hooks:
            await async_hook(result.publication)
        if hold and self.flow.lagging((channel,)):
            await self.flow.hold((channel,))
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
        elif not future.done():  # another subscriber is asking the broker: wait for it
            await asyncio.shield(future)

    async def subscribe(
        self,
        subscriber: Subscriber,
        channel: str,
        since: Position | None,
        on_ready: Callable[[Recovered], None],
        recovery: Recovery | None = None,
    ) -> Recovered:
        """Subscribe ``subscriber`` to ``channel``, resuming after ``since`` if given.

        ``on_ready`` is called synchronously with the merged result right before the subscriber
        goes live, so it can queue the reply and the recovered publications ahead of any live
        one. On failure the subscriber is removed again and the error propagates.
        """
        recovery = recovery if recovery is not None else Recovery(channel, since)
        generation = self.hub.generation  # what its read can know of (Hub.control)
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
        self.hub.promote(channel, subscriber, result.position, generation)
        return result

    async def read_since(self, channel: str, since: Position | None) -> Page | Gap | Position:
        """The answer a Recovery merges: a Page/Gap after ``since``, else the position."""
        if since is None:
            return await self.broker.position(channel)
        options = self.options(channel)
        limit = max(1, options.history_size)
        return await self.broker.since(channel, since, limit, options, now_ms())

    async def unsubscribe(self, subscriber: Subscriber, channel: str) -> None:
        if self._drop(subscriber, channel):
            with contextlib.suppress(Exception):
                await self.broker.unsubscribe(channel)

    def leave_now(self, subscriber: Subscriber, channel: str) -> None:
        """:meth:`unsubscribe` without waiting: gone from the hub at once, the broker told in
        the background if that was the channel's last subscriber here."""
        if self._drop(subscriber, channel):
            self.spawn(self._broker_unsubscribe(channel))

    def _drop(self, subscriber: Subscriber, channel: str) -> bool:
        """Remove from the hub; True if the broker subscription should go too."""
        if self.hub.remove(channel, subscriber) and channel in self._interest:
            future = self._interest.pop(channel)
            return future.done() and future.exception() is None
        return False

    async def _broker_unsubscribe(self, channel: str) -> None:
        with contextlib.suppress(Exception):
            await self.broker.unsubscribe(channel)

    # history and presence --------------------------------------------------------------------

    async def history(
        self, channel: str, since: Position | None, limit: int
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
        """``client`` subscribed to ``channel``: kept in presence, announced (per its options)."""
        options = self.options(channel)
        self._joined[(channel, client.client)] = client
        if options.presence:
            await self.presence.add(channel, client, PRESENCE_TTL, time.time())
        if options.join_leave:
            await self.broker.publish_control(
                channel, {"op": "join", "channel": channel, "client": client.to_dict()}
            )

    async def leave(self, channel: str, client: ClientInfo) -> None:
        """``client`` left ``channel``. A draining node announces no leave: its clients were
        all told to reconnect, and a leave per client to every other would be N² frames while
        the drain's clock runs."""
        if self._joined.pop((channel, client.client), None) is None:
            return
        options = self.options(channel)
        if options.presence:
            await self.presence.remove(channel, client.client)
        if options.join_leave and not self.draining:
            await self.broker.publish_control(
                channel, {"op": "leave", "channel": channel, "client": client.to_dict()}
            )

    async def presence_of(self, channel: str) -> list[ClientInfo]:
        return await self.presence.list(channel, time.time())

    async def _refresh_presence(self) -> None:
        while True:
            await asyncio.sleep(PRESENCE_TTL / 3)
            now = time.time()
            for (channel, _), client in list(self._joined.items()):
                if not self.options(channel).presence:
                    continue  # joined for join/leave messages only
                with contextlib.suppress(Exception):
                    await self.presence.add(channel, client, PRESENCE_TTL, now)

    # connections -----------------------------------------------------------------------------

    def register(self, connection: Connection) -> None:
        self.connections[connection.client_id] = connection
        self._opened[connection.client_id] = time.monotonic()
        self.metrics.connection_opened(connection.transport)
        level = _line_level(connection, self.settings.access_log)
        if level is None:
            return
        log_event(
            connection_log,
            "open",
            level,
            transport=connection.transport,
            client=connection.client_id,
            user=connection.user,
            address=getattr(connection, "address", None),
        )

    def unregister(self, connection: Connection) -> None:
        if self.connections.pop(connection.client_id, None) is not None:
            opened = self._opened.pop(connection.client_id, time.monotonic())
            code, reason, by = close_details(connection)
            name = _code_name(code) if code is not None else "ended"
            self.metrics.connection_closed(connection.transport, name)
            level = _line_level(connection, self.settings.access_log)
            if level is not None:
                log_event(
                    connection_log,
                    "close",
                    level,
                    transport=connection.transport,
                    client=connection.client_id,
                    user=connection.user,
                    address=getattr(connection, "address", None),
                    duration_s=round(time.monotonic() - opened, 3),
                    code=code,
                    reason=reason or name,
                    by=by,
                )
        self._unregistered.set()

    def disconnect_user(self, user: str, reason: Disconnect) -> int:
        """Close every connection of ``user``; returns how many."""
        found = [c for c in self.connections.values() if c.user == user]
        for connection in found:
            connection.disconnect(reason)
        return len(found)

    async def drain(self, timeout: float) -> bool:
        """Stop taking clients and send the connected ones away (see the module docstring).

        Waits at most ``timeout`` seconds for the connections to close and the drain hooks to
        finish; returns True if everything finished in time. Does not stop the node: call
        :meth:`stop` afterwards (it closes the broker).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if not self.draining:
            self.draining = True
            log.info("draining: %d connections told to reconnect", len(self.connections))
        restart = disconnect(CloseCode.SERVICE_RESTART)
        for connection in list(self.connections.values()):
            connection.disconnect(restart)
        while self.connections and loop.time() < deadline:
            self._unregistered.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._unregistered.wait(), deadline - loop.time())
        finished = not self.connections
        for hook in list(self.drain_hooks):
            left = max(0.0, deadline - loop.time())
            try:
                await asyncio.wait_for(hook(left), left)
            except TimeoutError:
                finished = False
            except Exception:
                log.exception("drain hook %r failed", hook)
        if not finished:
            log.warning("drain timeout (%.1fs): %d connections still open", timeout, len(self.connections))
        return finished

    def connection_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for connection in self.connections.values():
            counts[connection.transport] = counts.get(connection.transport, 0) + 1
        return counts
