"""The Redis broker: history in Redis Streams, fan-out over Redis Pub/Sub, for many nodes.

URLs: ``redis://host:port/db`` (or ``rediss://``) for one Redis, ``redis-cluster://host:port``
(any node) for Redis Cluster. Every key of a channel is hash-tagged ``{tidings:<channel>}`` so
they share one cluster slot and one Lua script can touch them all:

- ``{tidings:<ch>}:meta``: hash ``e`` (epoch), ``o`` (last offset). When it is missing (never
  published, flushed, restarted empty, expired) the next script to touch it stores a new random
  epoch and drops any stream left behind, so clients resuming get ``recovered: false``.
- ``{tidings:<ch>}:history``: a Stream whose entry ids are ``<offset>-0`` (so ``since`` is one
  ``XRANGE``), fields ``p`` (the publication JSON) and ``t`` (its time, ms).
- ``{tidings:<ch>}:idem:<key>``: the publication JSON an idempotency key produced, ``PX`` window.
- ``{tidings:<ch>}:pub``: the Pub/Sub channel (sharded ``SPUBLISH``/``SSUBSCRIBE`` on a cluster).
- ``{tidings:<ch>}:presence`` / ``:presence:exp``: see :mod:`tidings.brokers.redis_presence`.

History bounds: size by an exact ``XADD MAXLEN``; TTL three ways: readers drop entries older than
``history_ttl`` (by ``now_ms``, so the window is exact), each publish trims an expired prefix of at
most 16 entries with ``XTRIM MINID``, and the stream key ``PEXPIRE``s ``history_ttl`` after the
last publish. The meta key lives ``meta_ttl`` (default 30 days, never less than the history TTL)
after the last publish (a day when a read created it), so idle channels eventually leave
``channels()``; a channel whose meta expired starts a new epoch.

Publish is one ``EVALSHA`` of ``lua/publish.lua``: check the idempotency key, ``HINCRBY`` the
offset, read or create the epoch, ``XADD`` + trim, set TTLs, ``PUBLISH`` — so offsets are gap-free
under any number of publishers and Pub/Sub order is offset order. The JSON is encoded once, in
Python; the script only prefixes ``offset`` and ``epoch``.

Fan-out: one Pub/Sub connection per Redis address (one in total for a single Redis; one per
master owning subscribed channels on a cluster, with ``SSUBSCRIBE``), with one subscription per
channel whatever the number of clients, and a reader task that calls the handler in order. The
link is a small RESP2 connection of our own (:mod:`tidings.brokers._resp`) so that closing is
always prompt; commands go through redis-py.

Failures: every Redis or socket error is translated here, once, into
:class:`~tidings.exceptions.Unavailable`. On a single Redis, publishes are never retried by the
client library (a retried ``EVALSHA`` whose first reply was lost would publish twice); reads retry
once. On a cluster, redis-py retries connection errors itself so as to follow a failover, so a
publish may rarely be applied twice: a publisher that must not duplicate passes an idempotency
key, which the script checks first, making the retry return the original.

Reconnecting: a reader that loses its connection calls ``handler.on_broker_state(False)``,
reconnects with capped exponential backoff, resubscribes every channel, waits for the
confirmations, calls ``on_broker_state(True)`` and then **catches up**: for every channel it reads
history after the last position it delivered (or the position read when the channel was
subscribed) and hands the missed publications to the handler in order. If the epoch changed
(Redis restarted empty) or history no longer reaches back, it calls ``handler.on_control(channel,
{"op": "gap", "channel", "epoch", "requested", "available_from"})`` and then hands over what
history still has. Live messages at or below the last delivered offset are dropped (they were
caught up); a live message that skips offsets triggers the same catch-up first; a live message in
a new epoch (a flush under a live link) is preceded by a gap notice. So the handler never sees a
hole or a duplicate within an epoch, and never an epoch change it was not told about.

Limitations: on a cluster a listener reconnects to the same address, so a slot moved to another
master is picked up only when the channel is subscribed again. Redis persistence that loses a
tail of writes (RDB snapshots, AOF ``everysec``) can make a restarted Redis reuse offsets in the
same epoch; run Redis with ``appendfsync always`` or accept that window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import orjson
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from tidings.brokers._resp import RespAddress, RespConnection
from tidings.brokers.base import BrokerHandler, PublishResult
from tidings.brokers.redis_client import (
    PREFIX,
    CommandGate,
    channel_keys,
    channel_of_pubsub,
    load_script,
    redis_client,
    translated,
)
from tidings.brokers.redis_presence import RedisPresence
from tidings.core.events import Gap, Page, Publication
from tidings.core.history import resolve_since
from tidings.core.payload import publication_from_json
from tidings.core.permissions import NamespaceOptions
from tidings.core.position import Position, new_epoch
from tidings.exceptions import BadRequest, StartupError, Unavailable

__all__ = ["RedisBroker", "channel_keys", "redis_client"]

log = logging.getLogger("tidings.brokers.redis")

T = TypeVar("T")

CATCH_UP_PAGE = 1000
# A read of a channel never published to stores its epoch (so the position it answers stays
# valid for the first publication), but only for a day: reads of arbitrary names must not fill
# Redis for meta_ttl. Its first publication extends it to meta_ttl.
READ_CREATED_META_TTL_MS = 86_400_000
_PUBLICATION = b"P"[0]
_CONTROL = b"C"[0]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _reason(exc: BaseException) -> str:
    """What redis-py said (not our translation of it), on one line."""
    cause = exc.__cause__ if isinstance(exc, Unavailable) and exc.__cause__ else exc
    return " ".join(str(cause).split()) or type(cause).__name__


class _Subscription:
    """What the broker knows of one subscribed channel.

    ``baseline`` is the position read right after the subscription took effect; ``last`` the last
    publication handed to the handler. Catch-up after a reconnect starts from ``last`` or, when
    nothing was delivered yet, from ``baseline``.
    """

    __slots__ = ("baseline", "channel", "last", "listener", "ready")

    def __init__(self, channel: str, listener: _Listener) -> None:
        self.channel = channel
        self.listener = listener
        # Done once Redis confirmed the subscription; a concurrent subscribe waits on it.
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.baseline: Position | None = None
        self.last: Position | None = None

    @property
    def resume_from(self) -> Position | None:
        return self.last if self.last is not None else self.baseline


class _Listener:
    """One Pub/Sub connection to one Redis address, and the reader task that drains it.

    Only the reader task reads from the connection; ``subscribe`` only writes, and waits for the
    reader to see the confirmation, so the contract "once subscribe returns, later publications
    arrive" holds.
    """

    def __init__(self, broker: RedisBroker, address: RespAddress, sharded: bool) -> None:
        self.broker = broker
        self.address = address
        self.sharded = sharded
        self.names: set[bytes] = set()
        self.connection: RespConnection | None = None
        self.connected = asyncio.Event()
        self._pending: dict[bytes, asyncio.Future[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self.closed = False

    @property
    def _sub(self) -> str:
        return "SSUBSCRIBE" if self.sharded else "SUBSCRIBE"

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        self.closed = True
        # Closing the socket ends a blocked read even if a cancellation gets lost (see _resp).
        self._drop_connection()
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def subscribe(self, name: bytes, wait: float) -> None:
        """Subscribe ``name`` and wait for Redis to confirm it; Unavailable if it cannot."""
        self.names.add(name)
        future = asyncio.get_running_loop().create_future()
        self._pending[name] = future
        try:
            connection = self.connection
            if connection is None or not self.connected.is_set():
                raise Unavailable("redis pub/sub connection is down")
            async with translated("subscribe"):
                await connection.send(self._sub, name)
                async with asyncio.timeout(wait):
                    await asyncio.shield(future)
        except BaseException:
            self.names.discard(name)
            raise
        finally:
            self._pending.pop(name, None)

    async def unsubscribe(self, name: bytes) -> None:
        self.names.discard(name)
        connection = self.connection
        if connection is not None and self.connected.is_set():
            with contextlib.suppress(OSError):
                await connection.send("SUNSUBSCRIBE" if self.sharded else "UNSUBSCRIBE", name)

    def _drop_connection(self) -> None:
        self.connected.clear()
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.close()

    def _fail_pending(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(Unavailable("redis pub/sub connection lost"))
                future.exception()  # retrieved: the subscriber raises its own copy

    async def _run(self) -> None:
        broker = self.broker
        delay = broker.reconnect_min
        was_connected = False
        while not self.closed:
            try:
                await self._connect_and_resubscribe(catch_up=was_connected)
                broker._state(True)  # reported on a change only
                was_connected = True
                delay = broker.reconnect_min
                await self._read_forever()
            except Exception as exc:  # any failure of the connection: reconnect
                if self.closed:
                    return
                log.warning("redis pub/sub connection lost: %s", exc)
            self._drop_connection()
            self._fail_pending()
            broker._state(False)
            await asyncio.sleep(delay)
            delay = min(delay * 2, broker.reconnect_max)

    async def _connect_and_resubscribe(self, catch_up: bool) -> None:
        connection = RespConnection(self.address)
        self.connection = connection
        await connection.open()
        stash: list[list[Any]] = []
        names = set(self.names)
        if names:
            # One command per name: on a cluster, names of different slots cannot share one.
            for name in names:
                await connection.send(self._sub, name)
            waiting = set(names)
            while waiting:
                async with asyncio.timeout(self.broker.command_timeout):
                    message = await connection.read()
                kind = message[0] if isinstance(message, list) and message else None
                if kind in (b"subscribe", b"ssubscribe"):
                    waiting.discard(message[1])
                else:
                    stash.append(message)
        self.connected.set()
        self.broker._state(True)  # before the catch-up, as the module docstring says
        if catch_up:
            for name in names:
                await self.broker._catch_up_name(name, reconnect=True)
        for message in stash:
            await self._handle(message)

    async def _read_forever(self) -> None:
        connection = self.connection
        assert connection is not None
        while True:
            message = await connection.read()
            await self._handle(message)

    async def _handle(self, message: Any) -> None:
        if not isinstance(message, list) or len(message) < 3:
            return
        kind = message[0]
        if kind in (b"message", b"smessage"):
            await self.broker._on_message(message[1], message[2])
        elif kind in (b"subscribe", b"ssubscribe"):
            future = self._pending.get(message[1])
            if future is not None and not future.done():
                future.set_result(None)


class RedisBroker:
    """See the module docstring. Start once, close once.

    ``idempotency_window``: seconds an idempotency key is remembered. ``meta_ttl``: seconds a
    channel's epoch and offset outlive its last publish (0: forever). ``reconnect_min`` /
    ``reconnect_max``: the Pub/Sub reconnect backoff, doubling from min to max.
    ``command_timeout``: seconds a command may take. ``max_connections``: the command pool's
    size (per node on a cluster); more concurrent commands wait for a free connection.
    """

    def __init__(
        self,
        url: str,
        *,
        idempotency_window: float = 300.0,
        meta_ttl: float = 30 * 86400.0,
        reconnect_min: float = 0.05,
        reconnect_max: float = 5.0,
        command_timeout: float = 10.0,
        max_connections: int = 100,
    ) -> None:
        self.url = url
        self.cluster = url.startswith("redis-cluster://")
        self.idempotency_window = idempotency_window
        self.meta_ttl = meta_ttl
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.command_timeout = command_timeout
        self._gate = CommandGate(max_connections)
        if self.cluster:
            parts = urlsplit(url)
            self._auth: dict[str, Any] = {"username": parts.username, "password": parts.password}
        self._redis = redis_client(url, command_timeout=command_timeout, max_connections=max_connections)
        self._publish = self._redis.register_script(load_script("publish.lua"))
        self._history = self._redis.register_script(load_script("history.lua"))
        self._control = self._redis.register_script(load_script("control.lua"))
        self._pub_command = "spublish" if self.cluster else "publish"
        self._handler: BrokerHandler | None = None
        self._subs: dict[str, _Subscription] = {}
        self._listeners: dict[str, _Listener] = {}
        self._available = True

    # lifecycle -------------------------------------------------------------------------------

    async def start(self, handler: BrokerHandler) -> None:
        """Connect; StartupError, in one line, if Redis does not answer (a node should not
        start blind) or is not of the kind the URL says (a cluster node given as ``redis://``
        would answer MOVED to most keys; a plain Redis given as ``redis-cluster://``)."""
        self._handler = handler
        await self._check_server()
        if self.cluster:
            assert isinstance(self._redis, RedisCluster)
            async with translated("cluster discovery"):
                await self._redis.initialize()
        else:
            self._listener_for("")

    async def _check_server(self) -> None:
        where = _without_password(self.url)
        address = urlsplit(self.url)
        hostport = f"{address.hostname or '127.0.0.1'}:{address.port or 6379}"
        try:
            await self.ping()
        except (Unavailable, RedisClusterException) as exc:
            if self.cluster and "cluster mode is not enabled" in str(exc).lower():
                raise StartupError(
                    f"broker {where} is a single Redis, not a cluster node: use "
                    f'broker = "redis://{hostport}/0"'
                ) from None
            raise StartupError(f"broker {where} does not answer: {_reason(exc)}") from None
        if self.cluster:
            return
        try:
            async with translated("info"):
                info = await self._redis.info("cluster")
        except Unavailable:
            return  # INFO may be renamed or denied: nothing to learn then
        if str(info.get("cluster_enabled", "0")) == "1":
            raise StartupError(
                f'broker {where} is a Redis Cluster node: use broker = "redis-cluster://{hostport}"'
            )

    async def close(self) -> None:
        for listener in list(self._listeners.values()):
            await listener.close()
        self._listeners.clear()
        self._subs.clear()
        self._handler = None
        with contextlib.suppress(RedisError, OSError):
            await self._redis.aclose()

    def presence_manager(self) -> RedisPresence:
        """A :class:`~tidings.brokers.redis_presence.RedisPresence` sharing this broker's client."""
        return RedisPresence(self._redis, self._gate)

    # publishing --------------------------------------------------------------------------------

    def _meta_ms(self, options: NamespaceOptions) -> int:
        if self.meta_ttl <= 0:
            return 0
        return int(max(self.meta_ttl, options.history_ttl) * 1000)

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
        keys = channel_keys(channel)
        try:
            if data_json is None:
                data_json = orjson.dumps(data)
        except TypeError as exc:
            raise BadRequest(f"data is not JSON: {exc}") from exc
        head = orjson.dumps({"channel": channel, "id": publication_id, "time": now_ms, "event": event})
        body = b"".join((head[:-1], b',"data":', data_json, b"}"))
        idem_ms = int(self.idempotency_window * 1000) if idempotency_key is not None else 0
        idem_key = keys.idempotency(idempotency_key) if idempotency_key is not None else keys.meta
        ttl_ms = int(options.history_ttl * 1000) if options.history_ttl > 0 else 0
        async with self._gate("publish"):
            reply = await self._publish(
                keys=[keys.meta, keys.history, idem_key, keys.pubsub],
                args=[
                    body[1:],
                    new_epoch(),
                    max(0, options.history_size),
                    ttl_ms,
                    self._meta_ms(options),
                    idem_ms,
                    self._pub_command,
                    now_ms,
                ],
            )
        if int(reply[0]) == 0:
            return PublishResult(publication_from_json(reply[1]), duplicate=True)
        epoch = _text(reply[2])
        return PublishResult(Publication(channel, int(reply[1]), epoch, publication_id, now_ms, event, data))

    async def publish_control(self, channel: str, message: dict[str, Any]) -> None:
        keys = channel_keys(channel)
        async with self._gate("publish"):
            await self._control(keys=[keys.pubsub], args=[self._pub_command, b"C" + orjson.dumps(message)])

    # reading ---------------------------------------------------------------------------------

    async def _read(
        self, channel: str, mode: str, count: int, since: Position | None = None
    ) -> tuple[Position, list[Publication]]:
        keys = channel_keys(channel)
        args: list[str | int] = [
            new_epoch(),
            READ_CREATED_META_TTL_MS,
            mode,
            since.epoch if since else "",
            since.offset if since else 0,
            count,
        ]

        async def call() -> Any:
            return await self._history(keys=[keys.meta, keys.history], args=args)

        reply = await self._retrying("read", call)
        epoch = _text(reply[0])
        pubs = [publication_from_json(p) for p in reply[2]]
        return Position(epoch, int(reply[1])), pubs

    async def _retrying(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run an idempotent read, once more if the first attempt met a dead connection."""
        try:
            async with self._gate(what):
                return await call()
        except Unavailable:
            async with self._gate(what):
                return await call()

    @staticmethod
    def _fresh(pubs: list[Publication], options: NamespaceOptions | None, now_ms: int) -> list[Publication]:
        if options is None or options.history_ttl <= 0:
            return pubs
        horizon = now_ms - options.history_ttl * 1000
        return [p for p in pubs if p.time >= horizon]

    async def since(
        self, channel: str, since: Position, limit: int, options: NamespaceOptions, now_ms: int
    ) -> Page | Gap:
        return await self._since(channel, since, limit, options, now_ms)

    async def _since(
        self, channel: str, since: Position, limit: int, options: NamespaceOptions | None, now_ms: int
    ) -> Page | Gap:
        limit = max(1, limit)
        current, pubs = await self._read(channel, "since", limit + 1, since)
        return resolve_since(channel, since, current, self._fresh(pubs, options, now_ms), limit)

    async def latest(
        self, channel: str, limit: int, options: NamespaceOptions, now_ms: int
    ) -> tuple[list[Publication], Position]:
        current, pubs = await self._read(channel, "latest", max(0, limit))
        return self._fresh(pubs, options, now_ms), current

    async def position(self, channel: str) -> Position:
        current, _ = await self._read(channel, "position", 0)
        return current

    async def channels(self) -> dict[str, Position]:
        async def scan() -> dict[str, Position]:
            found: dict[str, Position] = {}
            async for key in self._redis.scan_iter(match=f"{{{PREFIX}:*}}:meta", count=1000):
                name = _text(key)
                channel = name[len(PREFIX) + 2 : -len("}:meta")]
                epoch, offset = await self._redis.hmget(name, ["e", "o"])
                if epoch is not None and offset is not None and int(offset) > 0:
                    found[channel] = Position(_text(epoch), int(offset))
            return found

        return await self._retrying("scan", scan)

    async def ping(self) -> None:
        async def call() -> Any:
            return await self._redis.ping()

        await self._retrying("ping", call)

    # subscribing -----------------------------------------------------------------------------

    def _listener_for(self, channel: str) -> _Listener:
        """The listener whose connection carries ``channel`` (started on first use)."""
        if isinstance(self._redis, RedisCluster):
            node = self._redis.get_node_from_key(channel_keys(channel).pubsub)
            if node is None:
                raise Unavailable(f"no cluster node serves {channel!r}")
            name = f"{node.host}:{node.port}"
            address = RespAddress(node.host, int(node.port), self._auth["username"], self._auth["password"])
        else:
            name, address = "", RespAddress.from_url(self.url)
        listener = self._listeners.get(name)
        if listener is None:
            listener = _Listener(self, address, sharded=self.cluster)
            self._listeners[name] = listener
            listener.start()
        return listener

    async def subscribe(self, channel: str) -> None:
        """See :class:`~tidings.brokers.base.Broker`; Unavailable if Redis cannot be reached."""
        existing = self._subs.get(channel)
        if existing is not None:
            await asyncio.shield(existing.ready)
            return
        listener = self._listener_for(channel)
        if not listener.connected.is_set():
            # A listener that just started gets a short grace period to connect.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await listener.connected.wait()
        sub = _Subscription(channel, listener)
        self._subs[channel] = sub
        try:
            await listener.subscribe(channel_keys(channel).pubsub.encode(), self.command_timeout)
            sub.baseline = await self.position(channel)
        except BaseException as exc:
            if self._subs.get(channel) is sub:
                del self._subs[channel]
            await listener.unsubscribe(channel_keys(channel).pubsub.encode())
            sub.ready.set_exception(exc if isinstance(exc, Exception) else Unavailable("cancelled"))
            sub.ready.exception()  # retrieved: concurrent waiters re-raise it themselves
            raise
        sub.ready.set_result(None)

    async def unsubscribe(self, channel: str) -> None:
        sub = self._subs.pop(channel, None)
        if sub is not None:
            await sub.listener.unsubscribe(channel_keys(channel).pubsub.encode())

    # the reader's side -------------------------------------------------------------------------

    def _state(self, available: bool) -> None:
        if available != self._available:
            self._available = available
            if self._handler is not None:
                self._handler.on_broker_state(available)

    def _deliver(self, handler: BrokerHandler, publication: Publication, sub: _Subscription) -> None:
        sub.last = publication.position
        try:
            handler.on_publication(publication)
        except Exception:  # a failing handler must not tear down the shared connection
            log.exception("broker handler failed on %s", publication.channel)

    @staticmethod
    def _control_to(handler: BrokerHandler, channel: str, message: dict[str, Any]) -> None:
        try:
            handler.on_control(channel, message)
        except Exception:
            log.exception("broker handler failed on a control message for %s", channel)

    async def _on_message(self, name: bytes, data: bytes) -> None:
        handler = self._handler
        sub = self._subs.get(channel_of_pubsub(name))
        if handler is None or sub is None or not data:
            return
        if data[0] == _CONTROL:
            self._control_to(handler, sub.channel, orjson.loads(data[1:]))
            return
        if data[0] != _PUBLICATION:
            return
        publication = publication_from_json(data[1:])
        last = sub.last
        if last is not None and last.epoch == publication.epoch:
            if publication.offset <= last.offset:
                return  # already handed over by a catch-up
            if publication.offset > last.offset + 1:
                await self._catch_up(sub)  # a hole: fill it from history first
                if sub.last is not None and publication.offset <= sub.last.offset:
                    return
        elif (known := sub.resume_from) is not None and known.epoch != publication.epoch:
            # The epoch changed under a live link (flushed Redis, expired meta): say so, also
            # before the first delivery (the baseline's epoch is what subscribers read), since
            # the hub hands a new epoch only to those told of it (core.recovery.is_new_to).
            self._control_to(
                handler,
                sub.channel,
                {
                    "op": "gap",
                    "channel": sub.channel,
                    "epoch": publication.epoch,
                    "requested": known.offset + 1,
                    "available_from": publication.offset,
                },
            )
        self._deliver(handler, publication, sub)

    async def _catch_up_name(self, name: bytes, *, reconnect: bool = False) -> None:
        sub = self._subs.get(channel_of_pubsub(name))
        if sub is not None:
            await self._catch_up(sub, reconnect=reconnect)

    async def _catch_up(self, sub: _Subscription, *, reconnect: bool = False) -> None:
        """Hand the handler what was published after ``sub.resume_from`` (see module doc).

        ``reconnect``: the link was down; gap notices then say so (``"reconnect": true``), so
        the node tells only the subscribers that were live before the outage."""
        handler = self._handler
        start = sub.resume_from
        if handler is None or start is None:
            return
        position = start
        while True:
            # A Gap carries what history still has (a new epoch from its first offset): it is
            # handed over after the notice, then the pages after it.
            answer = await self._since(sub.channel, position, CATCH_UP_PAGE, None, 0)
            if isinstance(answer, Gap):
                notice: dict[str, Any] = {"op": "gap", **answer.to_dict()}
                if reconnect:
                    notice["reconnect"] = True
                self._control_to(handler, sub.channel, notice)
                position = answer.position
            for publication in answer.publications:
                self._deliver(handler, publication, sub)
                position = publication.position
            sub.last = position
            more = (
                answer.more
                if isinstance(answer, Page)
                else (bool(answer.publications) and position.offset < answer.position.offset)
            )
            if not more:
                return
