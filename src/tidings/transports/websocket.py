"""The WebSocket transport (``GET /ws``): what every WebSocket engine shares.

:class:`CommandHandler` holds one client's :class:`~tidings.core.session.Session` and carries out
its commands against the node; it needs only "queue this text frame", "deliver this publication"
(live or replayed) and "carry out what the machine says" (:meth:`~CommandHandler.act`) from its
engine. The connection's rules (the close handshake, the slow consumer, keepalive, the order of
commands, token expiry, the drain) are its :class:`~tidings.machines.websocket.WebSocketMachine`'s;
:func:`websocket_config` gives the machine its numbers. :func:`admit` is the one admission check
(origin, draining, token, connection limits). The drivers:
:class:`~tidings.engines.asgi.websocket.WebSocketConnection` (ASGI; one writer task, so a
``subscribed`` reply always precedes the recovered and live messages) and
:class:`~tidings.engines.sockets.websocket.FastWebSocket` (the owned-socket engine, which writes
pre-encoded frames straight to its socket). Frames from the client are handled one at a time,
in order.

Bad input: a binary frame closes with 1003, invalid JSON with 1007, a frame over the size limit
with 1009; a valid JSON frame that is not a valid command gets an ``error`` reply and the
connection stays open. A full outbox closes with 4008 (slow consumer). While the node drains,
a new connection is accepted and closed at once with 1012 (service restart: come back).

Ops: the node writes one log line when a connection opens and one when it closes
(``tidings.connections``), with the address and the :meth:`CommandHandler.close_info` given here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson

from tidings.auth.apikeys import bearer_token
from tidings.auth.limits import ConnectionLease, TokenBucket
from tidings.auth.security import header
from tidings.core.commands import (
    CommandError,
    Connect,
    HistoryCmd,
    Ping,
    PresenceCmd,
    PublishCmd,
    Rpc,
    Subscribe,
    Unsubscribe,
    WireStats,
    parse_command,
)
from tidings.core.delta import DeltaSubscriptions
from tidings.core.disconnect import CloseCode, Disconnect, disconnect
from tidings.core.events import Publication
from tidings.core.permissions import Capability, Credentials
from tidings.core.presence import ClientInfo
from tidings.core.proxy import UNCHANGED, ProxyDisconnect, ProxyKind, refresh_delay
from tidings.core.recovery import Recovered
from tidings.core.session import Session, SessionState
from tidings.core.wire.frames import EncodedPublication, reply
from tidings.exceptions import NotFound, RateLimited, TidingsError, TokenExpired, Unauthorized, Unavailable
from tidings.ids import random_id
from tidings.machines.backlog import close_timeout
from tidings.machines.websocket import WebSocketConfig, WebSocketMachine
from tidings.node import Node
from tidings.proxy import Caller
from tidings.settings import Settings

__all__ = ["CommandHandler", "Refused", "admit", "websocket_config"]

log = logging.getLogger("tidings.ws")

Scope = dict[str, Any]
Receive = Any
Send = Any


def _query_param(scope: Scope, name: str) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    return values[0] if values else None


def websocket_config(settings: Settings, *, server_pings: bool = False) -> WebSocketConfig:
    """The rules' numbers of a ``/ws`` connection. ``server_pings``: the server below the
    driver sends the keepalive pings and times out a silent client (uvicorn, from the same
    settings: ``ws_ping_interval``, ``ws_ping_timeout``), and its driver cannot see pongs; its
    backlog is what waits in the machine (the ASGI writer awaits each send)."""
    limits = settings.limits
    return WebSocketConfig(
        max_frame_bytes=limits.max_frame_bytes,
        outbox_bytes=limits.outbox_bytes,
        close_timeout=close_timeout(limits.idle_timeout),
        ping_interval=None if server_pings else limits.ping_interval,
        idle_timeout=limits.idle_timeout,
        count_queue=server_pings,
    )


class Refused(Exception):
    """The upgrade is refused: close with ``reason``, after accepting it if ``accept`` (else the
    HTTP answer is 403)."""

    def __init__(self, reason: Disconnect, accept: bool) -> None:
        super().__init__(reason.reason)
        self.reason = reason
        self.accept = accept


#: What a subscription allowed by the subscribe proxy (or made by a connect proxy's
#: ``channels``) may do on its channel, for as long as the connection lasts.
PROXY_GRANT = frozenset({Capability.SUBSCRIBE, Capability.PRESENCE, Capability.HISTORY})


async def admit(node: Node, scope: Scope) -> tuple[Session, ConnectionLease, Caller | None]:
    """The session and connection lease of a new WebSocket, and (with proxies configured) the
    :class:`~tidings.proxy.Caller` its proxy requests go out as; or :class:`Refused`.

    ``scope`` needs ``headers`` (raw, lower-case names), ``client`` and ``query_string`` as in
    ASGI. Every WebSocket transport asks this before it accepts, so they admit clients alike: a
    forbidden Origin is refused before the upgrade (cross-site hijacking); a draining node, a
    bad or expired token and a connection limit are told with a close code.
    """
    security = node.security
    if not security.origin_allowed(scope):
        raise Refused(disconnect(CloseCode.POLICY_VIOLATION), accept=False)
    if node.draining:
        raise Refused(disconnect(CloseCode.SERVICE_RESTART), accept=True)
    try:
        token = bearer_token(header(scope["headers"], b"authorization")) or _query_param(scope, "token")
        credentials = await security.credentials(token) if token else None
        lease = security.admit(scope, credentials.user if credentials else "")
    except TidingsError as exc:
        code = (
            CloseCode.TOKEN_EXPIRED
            if isinstance(exc, TokenExpired)
            else CloseCode.RATE_LIMITED
            if isinstance(exc, RateLimited)
            else CloseCode.UNAUTHORIZED
        )
        raise Refused(disconnect(code, exc.message), accept=True) from None
    session = Session(node.namespaces, node.settings.limits.max_subscriptions_per_connection, credentials)
    caller = None
    if node.proxies.endpoints:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        caller = node.proxies.caller(random_id(), "ws", headers, security.client_ip(scope))
    return session, lease, caller


class CommandHandler:
    """One WebSocket client's commands, for every WebSocket transport (ASGI and the fast server).

    A transport subclasses it and supplies synchronous calls: :meth:`queue` (send this text frame
    after everything queued before it), :meth:`deliver` (the same for a publication, as the hub
    calls it), :meth:`replay` (a recovered publication, not counted against the outbox) and
    :meth:`disconnect` (close with this reason). It feeds each text frame to :meth:`handle`, one at
    a time and in order, and calls :meth:`release` once when the connection is gone.

    The connection's rules (when to close and how, keepalive, token expiry, the slow consumer)
    are its :class:`~tidings.machines.websocket.WebSocketMachine`'s (:attr:`machine`, made by the
    subclass before this initializer runs); after an input to it, the subclass's :meth:`act`
    carries out what it says (writes, the close, the timer).

    With proxies configured (``caller``), the first command asks the connect proxy (unless a
    token made the connection and ``skip_with_token``), a subscribe or publish in a proxied
    namespace asks its proxy, ``rpc`` the rpc proxy, and a connection the connect proxy gave an
    ``expire_at`` asks the refresh proxy before it expires (docs/reference/proxy.md).

    Its slots (``client_id``, ``node``, ``session``, ``lease``, ``address``, ``_bucket`` …) are
    declared by each subclass (:data:`HANDLER_SLOTS`), so that a subclass may also derive from
    another slotted class (an ``asyncio.Protocol`` base).
    """

    if not TYPE_CHECKING:  # slots declared by the subclasses; mypy would refuse the assignments
        __slots__ = ()
    transport = "ws"
    client_id: str
    node: Node
    session: Session
    lease: ConnectionLease | None
    address: str | None
    _bucket: TokenBucket | None
    _caller: Caller | None
    _connecting: bool
    _refresher: asyncio.Task[None] | None
    machine: WebSocketMachine[Any]
    #: The delta subscriptions (None until the first: the hot path's one check).
    deltas: DeltaSubscriptions | None
    #: What was written for each publication since the last ``wire_stats`` (None until the
    #: first asks: the hot path's one check, no cost to the connections that never ask).
    wire_log: collections.deque[WireRecord] | None
    #: Whether this engine knows the bytes it writes (the sockets engine compresses its frames
    #: itself; under an ASGI server the server does, out of tidings' sight).
    counts_wire = False

    def __init__(
        self,
        node: Node,
        session: Session,
        lease: ConnectionLease | None = None,
        address: str | None = None,
        caller: Caller | None = None,
    ) -> None:
        self.node = node
        self.session = session
        self.client_id = caller.client if caller is not None else random_id()
        self.lease = lease
        self.address = address
        self._bucket = None
        self._caller = caller
        connect = node.proxies.endpoints.get(ProxyKind.CONNECT)
        self._connecting = (
            caller is not None
            and connect is not None
            and (session.state is SessionState.NEW or not connect.skip_with_token)
        )
        self._refresher = None
        self.deltas = None
        self.wire_log = None
        self._watch_expiry()

    @property
    def user(self) -> str:
        return self.session.credentials.user

    # what the transport supplies ---------------------------------------------------------------

    def queue(self, frame: str) -> None:
        raise NotImplementedError

    def deliver(self, publication: EncodedPublication) -> None:
        raise NotImplementedError

    def replay(self, publication: EncodedPublication) -> None:
        raise NotImplementedError

    def act(self) -> None:
        """Carry out what the machine says after an input (write, close, re-arm the timer)."""
        raise NotImplementedError

    def disconnect(self, reason: Disconnect) -> None:
        if self.machine.close(reason):
            self.act()

    def close_info(self) -> tuple[int | None, str, str]:
        """``(code, reason, by)`` for the node's close log line and metrics."""
        return self.machine.close_info()

    def control(self, channel: str, message: dict[str, Any]) -> None:
        if message.get("op") == "gap" and self.deltas is not None:
            self.deltas.restart(channel)
        if message.get("op") == "join" and message["client"].get("client") == self.client_id:
            return  # its own join: the subscribed reply already said so (protocol.md)
        self.queue(orjson.dumps(message).decode())

    def _watch_expiry(self) -> None:
        """The token or the grants changed: the machine wakes at the next expiry (then closes
        with 4001, unless a ``connect`` refreshed the token, or ends the subscriptions a
        subscription token alone allowed: :meth:`grants_ended`)."""
        self.machine.watch_expiry(asyncio.get_running_loop().time(), time.time())
        self.act()

    def grants_ended(self, channels: list[str]) -> None:
        """Leave the channels whose subscription-token grants ended, and tell the client."""
        for channel in channels:
            self._forget_delta(channel)
            self.node.leave_now(self, channel)
            if self.node.options(channel).presence:
                self.node.spawn(self._leave(channel))
            self.queue(
                reply(
                    "unsubscribed",
                    None,
                    channel=channel,
                    code="unauthorized",
                    message="subscription token expired: subscribe again with a new "
                    "token (and since, to miss nothing)",
                )
            )

    async def run_commands(self) -> None:
        """Carry out the client's messages the machine holds, one at a time and in order; an
        exception (a bug, not the client's) closes with 1011."""
        machine = self.machine
        try:
            while (text := machine.next_command()) is not None:
                assert isinstance(text, str)  # binary messages are refused (1003)
                await self.handle(text)
        except Exception:
            log.exception("a WebSocket command failed")
            machine.failed()
        self.act()

    def _take_publish_token(self) -> None:
        limits = self.node.settings.limits
        now = time.monotonic()
        if self._bucket is None:  # made on first publish: most connections never publish
            self._bucket = TokenBucket(limits.publish_rate, limits.publish_burst, now=now)
        if not self._bucket.take(now):
            raise RateLimited(f"over {limits.publish_rate:g} publishes per second")

    # commands --------------------------------------------------------------------------------

    def error(self, ref: int | None, exc: TidingsError) -> None:
        self.queue(reply("error", ref, code=exc.code, message=exc.message))

    async def handle(self, text: str) -> None:
        node = self.node
        try:
            command = parse_command(text, node.settings.limits.history_limit)
            if self._asks_connect_proxy(command) and (
                not await self._connect_by_proxy(command) or isinstance(command, Connect)
            ):
                return
            if isinstance(command, Subscribe) and command.token is not None:
                await self._grant_subscription(command)
            elif isinstance(command, Subscribe) and self._proxied(ProxyKind.SUBSCRIBE, command.channel):
                await self._subscribe_by_proxy(command)
            proxied = isinstance(command, PublishCmd) and self._proxied(ProxyKind.PUBLISH, command.channel)
            command = self.session.receive(command, time.time(), proxied=proxied)
            await self._execute(command)
        except ProxyDisconnect as exc:
            self.disconnect(exc.reason)
        except CommandError as exc:
            if exc.invalid_json:
                self.disconnect(disconnect(CloseCode.INVALID_PAYLOAD, exc.error.message))
                return
            if isinstance(exc.error, TokenExpired):
                self.error(exc.ref, exc.error)
                self.disconnect(disconnect(CloseCode.TOKEN_EXPIRED))
                return
            self.error(exc.ref, exc.error)

    async def _execute(self, command: Any) -> None:
        node = self.node
        ref = command.ref
        try:
            if isinstance(command, PublishCmd):
                self._take_publish_token()
                data = command.data
                if self._proxied(ProxyKind.PUBLISH, command.channel):
                    assert self._caller is not None
                    allowed = await node.proxies.publish(self._caller, self.user, command.channel, data)
                    data = data if allowed.data is UNCHANGED else allowed.data
                result = await node.publish(
                    command.channel,
                    data,
                    event=command.event,
                    idempotency_key=command.idempotency_key,
                )
                pub = result.publication
                self.queue(
                    reply(
                        "published", ref, channel=pub.channel, offset=pub.offset, epoch=pub.epoch, id=pub.id
                    )
                )
            elif isinstance(command, Subscribe):
                await self._subscribe(command)
            elif isinstance(command, Unsubscribe):
                self._forget_delta(command.channel)
                await self._leave(command.channel)
                await node.unsubscribe(self, command.channel)
                self.queue(reply("unsubscribed", ref, channel=command.channel))
            elif isinstance(command, Ping):
                self.queue(reply("pong", ref))
            elif isinstance(command, WireStats):
                log = self.wire_log
                if log is None:
                    self.wire_log = collections.deque(maxlen=WIRE_LOG_SIZE)
                messages = [dict(zip(WIRE_FIELDS, record, strict=True)) for record in log or ()]
                if log:
                    log.clear()
                self.queue(reply("wire_stats", ref, counted=self.counts_wire, messages=messages))
            elif isinstance(command, HistoryCmd):
                pubs, position, gap = await node.history(command.channel, command.since, command.limit)
                extra: dict[str, Any] = {"gap": gap.to_dict()} if gap is not None else {}
                self.queue(
                    reply(
                        "history",
                        ref,
                        channel=command.channel,
                        epoch=position.epoch,
                        offset=position.offset,
                        publications=[p.to_dict() for p in pubs],
                        **extra,
                    )
                )
            elif isinstance(command, PresenceCmd):
                clients = await node.presence_of(command.channel)
                self.queue(
                    reply("presence", ref, channel=command.channel, clients=[c.to_dict() for c in clients])
                )
            elif isinstance(command, Connect):
                await self._connect(command)
            elif isinstance(command, Rpc):
                await self._rpc(command)
        except ProxyDisconnect as exc:
            self.disconnect(exc.reason)
        except TidingsError as exc:
            self.error(ref, exc)

    # the proxies -----------------------------------------------------------------------------

    def _proxied(self, kind: ProxyKind, channel: str) -> bool:
        """Whether the ``kind`` proxy decides about ``channel`` (a subscribe allowed by the
        connection token's own grants does not ask)."""
        if self._caller is None or kind not in self.node.proxies:
            return False
        options = self.node.options(channel)
        if kind is ProxyKind.SUBSCRIBE:
            return options.subscribe_proxy and not self.session.credentials.granted(
                Capability.SUBSCRIBE, channel
            )
        return options.publish_proxy

    def _asks_connect_proxy(self, command: Any) -> bool:
        """Whether ``command`` waits for the connect proxy: the first command does, unless it is
        a ``connect`` with a token and ``skip_with_token``."""
        if not self._connecting:
            return False
        skip = self.node.proxies.endpoints[ProxyKind.CONNECT].skip_with_token
        return not (isinstance(command, Connect) and command.token is not None and skip)

    async def _connect_by_proxy(self, command: Any) -> bool:
        """Ask the connect proxy who the client is (on its first command; a ``connect``'s
        ``data`` goes along); False once the connection is being closed: 4003 when refused,
        1013 when the backend is unavailable, the backend's code when it says disconnect."""
        assert self._caller is not None
        self._connecting = False
        node = self.node
        token = self.session.credentials if self.session.state is SessionState.CONNECTED else None
        try:
            if isinstance(command, Connect) and command.token is not None:
                token = await node.security.credentials(command.token)
            result = await node.proxies.connect(
                self._caller,
                user=token.user if token is not None else None,
                data=command.data if isinstance(command, Connect) else None,
            )
            if token is not None and result.user and result.user != token.user:
                raise Unauthorized("the connect proxy named another user than the token")
            credentials = Credentials(
                result.user or (token.user if token is not None else ""),
                token.grants if token is not None else {},
                result.expire_at,
                result.info if result.info is not None or token is None else token.info,
            )
            self.session.connect(credentials, time.time())
        except ProxyDisconnect as exc:
            self.disconnect(exc.reason)
            return False
        except Unavailable as exc:
            self.disconnect(disconnect(CloseCode.TRY_AGAIN_LATER, exc.message))
            return False
        except TidingsError as exc:
            self.disconnect(disconnect(CloseCode.UNAUTHORIZED, exc.message))
            return False
        if self.lease is not None:
            node.security.limiter.assign_user(self.lease, credentials.user)
        self._watch_expiry()
        self._refresh_later()
        if isinstance(command, Connect):
            self.queue(
                reply(
                    "connected",
                    command.ref,
                    client=self.client_id,
                    user=credentials.user,
                    expires=result.expire_at,
                )
            )
        for channel in result.channels:  # server-side subscriptions, told with ref-less replies
            self.session.grant(channel, PROXY_GRANT, math.inf)
            try:
                subscribe = Subscribe(None, channel, None)
                self.session.receive(subscribe, time.time())
                await self._subscribe(subscribe)
            except CommandError as exc:
                self.error(None, exc.error)
            except TidingsError as exc:
                self.error(None, exc)
        return True

    async def _subscribe_by_proxy(self, command: Subscribe) -> None:
        assert self._caller is not None
        try:
            await self.node.proxies.subscribe(self._caller, self.user, command.channel)
        except ProxyDisconnect:
            raise
        except TidingsError as exc:
            raise CommandError(exc, command.ref) from None
        self.session.grant(command.channel, PROXY_GRANT, math.inf)

    async def _rpc(self, command: Rpc) -> None:
        if self._caller is None or ProxyKind.RPC not in self.node.proxies:
            raise NotFound("rpc needs an rpc proxy ([proxy.rpc]); none is configured")
        self._take_publish_token()  # each call costs the backend a request: rate-limited alike
        result = await self.node.proxies.rpc(self._caller, self.user, command.method, command.data)
        self.queue(reply("rpc", command.ref, data=result.data))

    def _refresh_later(self) -> None:
        """With a refresh proxy, ask it before the connection expires (:meth:`_refresh`)."""
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None
        if self.session.credentials.expires_at is not None and ProxyKind.REFRESH in self.node.proxies:
            self._refresher = self.node.spawn(self._refresh())

    async def _refresh(self) -> None:
        """Extend the connection while the refresh proxy allows it: a refusal closes with 4003,
        a disconnect with the backend's code; an unavailable backend is asked again each second
        until the expiry, when the machine closes with 4001 (reconnect: the connect proxy)."""
        assert self._caller is not None
        timeout = self.node.proxies.endpoints[ProxyKind.REFRESH].timeout
        while (expires := self.session.credentials.expires_at) is not None:
            await asyncio.sleep(refresh_delay(expires, time.time(), timeout))
            try:
                result = await self.node.proxies.refresh(self._caller, self.user)
                creds = self.session.credentials
                info = creds.info if result.info is None else result.info
                self.session.connect(replace(creds, expires_at=result.expire_at, info=info), time.time())
            except ProxyDisconnect as exc:
                self.disconnect(exc.reason)
                return
            except Unavailable:
                await asyncio.sleep(1.0)
                continue
            except TidingsError as exc:
                self.disconnect(disconnect(CloseCode.UNAUTHORIZED, exc.message))
                return
            self._watch_expiry()

    async def _connect(self, command: Connect) -> None:
        if command.token is None:
            if not self.session.credentials.anonymous:
                raise Unauthorized("connect needs a token on an authenticated connection")
            self.session.connect(self.session.credentials, time.time())
        else:
            credentials = await self.node.security.credentials(command.token)
            self.session.connect(credentials, time.time())
            self._connecting = False
            if self.lease is not None:
                self.node.security.limiter.assign_user(self.lease, credentials.user)
            self._watch_expiry()
        creds = self.session.credentials
        self.queue(
            reply("connected", command.ref, client=self.client_id, user=creds.user, expires=creds.expires_at)
        )

    async def _grant_subscription(self, command: Subscribe) -> None:
        """A subscription token grants its one channel to this connection."""
        assert command.token is not None
        try:
            grant = await self.node.security.tokens.verify_subscription(
                command.token, channel=command.channel, user=self.session.credentials.user or None
            )
        except TidingsError as exc:
            raise CommandError(exc, command.ref) from None
        self.session.grant(grant.channel, grant.capabilities, grant.expires_at)
        self._watch_expiry()

    async def _subscribe(self, command: Subscribe) -> None:
        channel = command.channel
        recovery = self.session.recovery(channel)

        def ready(result: Recovered) -> None:
            fields: dict[str, Any] = {
                "channel": channel,
                "epoch": result.position.epoch,
                "offset": result.position.offset,
                "recovered": result.recovered,
            }
            if result.gap is not None:
                fields["requested"] = result.gap.requested
                fields["available_from"] = result.gap.available_from
            self.queue(reply("subscribed", command.ref, **fields))
            for pub in result.publications:  # the replay: bounded by history, not the outbox
                self.replay(EncodedPublication(pub))

        if command.delta is not None:
            if self.deltas is None:
                self.deltas = DeltaSubscriptions()
            self.deltas.add(channel)  # before any live delivery: the first goes in full
        try:
            await self.node.subscribe(self, channel, command.since, ready, recovery)
        except BaseException:
            self._forget_delta(channel)
            self.session.unsubscribe(channel)
            raise
        self.session.subscribed(channel)
        # not if the subscription ended meanwhile (its subscription token expired)
        options = self.node.options(channel)
        if channel in self.session.subscriptions and (options.presence or options.join_leave):
            await self.node.join(channel, self._client_info())

    def _forget_delta(self, channel: str) -> None:
        if self.deltas is not None:
            self.deltas.discard(channel)
            if not self.deltas:
                self.deltas = None

    def _client_info(self) -> ClientInfo:
        creds = self.session.credentials
        return ClientInfo(self.client_id, creds.user, creds.info)

    async def _leave(self, channel: str) -> None:
        options = self.node.options(channel)
        if options.presence or options.join_leave:
            await self.node.leave(channel, self._client_info())

    async def release(self) -> None:
        """Leave every channel and forget the connection (the transport has stopped)."""
        if self.lease is not None:
            self.lease.release()
        if self._refresher is not None:
            self._refresher.cancel()
        for channel in list(self.session.subscriptions):
            with contextlib.suppress(Exception):
                await self._leave(channel)
            await self.node.unsubscribe(self, channel)
        self.session.close()
        self.node.unregister(self)


#: Publications a ``wire_stats`` log keeps between two asks (the oldest are dropped): a client
#: that asks once and never again holds at most this many records (~200 B each).
WIRE_LOG_SIZE = 200
#: A ``wire_stats`` record: channel, offset, bytes written, uncompressed, in full, compressed,
#: delta (a tuple: a dict would cost twice as much for each publication waiting to be asked for).
WireRecord = tuple[str, int, int, int, int, bool, bool]
WIRE_FIELDS = ("channel", "offset", "wire", "uncompressed", "full", "compressed", "delta")

HANDLER_SLOTS = (
    "_bucket",
    "_caller",
    "_connecting",
    "_refresher",
    "address",
    "client_id",
    "deltas",
    "lease",
    "node",
    "session",
    "wire_log",
)


def publication_frame(publication: Publication) -> str:
    """The ``message`` frame of one publication (outside fan-out, e.g. for tests)."""
    return EncodedPublication(publication).ws_text
