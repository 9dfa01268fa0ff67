"""The fast server: asyncio protocols that own sockets below ASGI, inside uvicorn.

``tidings serve`` runs uvicorn with ``http=FastProtocol``. uvicorn still owns the listening
sockets, lifespan, signals, graceful shutdown and TLS; every connection starts as a
:class:`FastProtocol`, which looks at the request line:

- a request of an owned route (:attr:`FastContext.routes`) is answered here: a WebSocket upgrade
  hands the transport to a :class:`FastWebSocket` (``transport.set_protocol``), the HTTP routes
  to an exchange (below);
- anything else is handed, with the bytes read so far, to uvicorn's own HTTP protocol (the ASGI
  app), exactly as if uvicorn had accepted the connection itself.

A :class:`FastWebSocket` is a :class:`~tidings.transports.websocket.CommandHandler` (the commands,
shared with the ASGI path) whose rules are its :class:`~tidings.machines.websocket.WebSocketMachine`'s
(:mod:`.websocket` is the driver). Fan-out calls :meth:`FastWebSocket.deliver`, which appends the
publication's pre-built frame (``ws_frame``, the same bytes for every subscriber) to the machine's
pending list; one ``call_soon`` per loop iteration writes each dirty connection's frames with one
``transport.write``. The transport's write buffer is the outbox: past ``limits.outbox_bytes`` the
client is closed as slow (4008) and further frames are dropped. No task, queue or event exists
per idle connection: keepalive and token expiry are one timer handle, and a task runs only while
a client's commands are being carried out.

``GET /sse``, ``/stream``, ``/poll`` and ``POST /api/publish`` are answered here too, by the
exchanges of :mod:`.streams` and :mod:`.publish`, which write through the same pending-list and
flush machinery (:class:`Flushable`); when their answer is complete, :meth:`FastContext.reuse`
gives the kept-alive connection a new :class:`FastProtocol` for its next request.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, cast
from weakref import WeakKeyDictionary

from uvicorn import Config

from tidings.core.wire.deflate import Deflate, negotiate
from tidings.core.wire.deflate import extension_headers as extensions
from tidings.core.wire.websocket import (
    HandshakeError,
    check_handshake,
    close_frame,
    handshake_response,
)
from tidings.engines.sockets.echo import EchoWebSocket
from tidings.engines.sockets.exchange import HTTP_ROUTES, owned
from tidings.engines.sockets.frames import FrameConnection
from tidings.engines.sockets.http import HeadError, HeadParser, RequestHead, match_route
from tidings.engines.sockets.poll import FastPoll
from tidings.engines.sockets.publish import PUBLISH_ROUTE, publish_length, serve_publish
from tidings.engines.sockets.stream import FastNDJSON, FastSSE
from tidings.engines.sockets.websocket import FastWebSocket
from tidings.engines.uvicorn_internals import (
    GuardedHttpToolsProtocol,
    ServerState,
    forget_connection,
    track_connection,
)
from tidings.flow import PublishFlow
from tidings.logs import request_id, request_id_for
from tidings.node import Node
from tidings.transports.http_common import close_timeout
from tidings.transports.http_errors import http_error_response
from tidings.transports.websocket import Refused, admit, websocket_config

__all__ = ["FastContext", "FastProtocol", "serve_http"]

log = logging.getLogger("tidings.fast")

# Bytes a client may send after its upgrade request while admission waits (a JWKS fetch …);
# past them reading pauses until the 101, as the ASGI engine's protocol does.
PRE_OPEN_BYTES = 64 * 1024
_BARE_LF = re.compile(rb"(?<!\r)\n")


class FastContext:
    """What every connection of one uvicorn server shares: the node, limits, uvicorn's state,
    the ASGI fallback protocol, and the list of connections with frames to write."""

    __slots__ = (
        "_dirty",
        "_next_probe",
        "_scheduled",
        "app_state",
        "close_timeout",
        "coalesce",
        "compression",
        "config",
        "echo",
        "fallback",
        "flow",
        "handshake_timeout",
        "loop",
        "max_frames",
        "max_head",
        "max_request",
        "node",
        "outbox_bytes",
        "routes",
        "server_state",
        "tasks",
        "ws_config",
        "ws_paths",
    )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.config = config
        self.server_state = server_state
        self.app_state = app_state
        self.loop = loop
        self.node: Node | None = getattr(config.app, "node", None)
        self.fallback = _fallback_class()
        self.tasks: set[asyncio.Task[None]] = set()
        self._dirty: list[Flushable] = []
        self._scheduled = False
        self.coalesce = True
        self.flow: PublishFlow | None = None  # probed by the WebSockets flushed (see _probe)
        self._next_probe = 0.0
        routes: list[bytes] = []
        ws_paths: list[str] = []
        self.echo = False
        self.compression: int | None = None  # the threshold, if permessage-deflate is accepted
        if self.node is not None:
            settings = self.node.settings
            limits = settings.limits
            if settings.websocket.enabled:
                routes.append(b"GET /ws")
                ws_paths.append("/ws")
            routes.extend(b"GET " + path for path in HTTP_ROUTES)
            routes.append(PUBLISH_ROUTE)
            if settings.server.debug_echo:
                routes.append(b"GET /ws-echo")
                ws_paths.append("/ws-echo")
                self.echo = True
            self.coalesce = settings.server.coalesce_writes
            if self.node.flow.enabled:
                self.flow = self.node.flow
            self.max_request = limits.max_request_bytes
            self.max_head = limits.max_header_bytes
            self.max_frames = limits.max_message_frames
            self.outbox_bytes = limits.outbox_bytes
            self.handshake_timeout = limits.handshake_timeout
            self.close_timeout = close_timeout(settings)
            self.ws_config = websocket_config(settings)
            if settings.websocket.compression:
                self.compression = settings.websocket.compression_threshold
        self.routes = tuple(routes)
        self.ws_paths = frozenset(ws_paths)  # the owned routes that take a WebSocket upgrade

    def negotiate(self, headers: dict[str, str]) -> Deflate | None:
        """permessage-deflate for a WebSocket upgrade with these (lower-case) headers."""
        if self.compression is None:
            return None
        return negotiate(headers.get("sec-websocket-extensions"), self.compression)

    @classmethod
    def of(
        cls,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        loop: asyncio.AbstractEventLoop | None,
    ) -> FastContext:
        context = _contexts.get(server_state)
        if context is None:
            context = cls(config, server_state, app_state, loop or asyncio.get_event_loop())
            _contexts[server_state] = context
        return context

    def mark_dirty(self, connection: Flushable) -> None:
        """Write ``connection``'s pending frames at the end of this loop iteration."""
        self._dirty.append(connection)
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        for connection in dirty:
            connection.flush()
        if self.flow is not None and self.loop.time() >= self._next_probe:
            self._probe(dirty)

    def _probe(self, flushed: list[Flushable]) -> None:
        """A round of flow-control probes: pings behind the data just written (tidings.flow)."""
        flow = self.flow
        assert flow is not None
        now = self.loop.time()
        self._next_probe = now + flow.interval
        gauge = flow.gauge
        gauge.retire(now)
        # A sentinel is picked at random among the connections just written to (one a round):
        # the first ones in fan-out order are likely the first ones their clients read, too.
        if flushed and not gauge.full:
            connection = random.choice(flushed)
            if isinstance(connection, FastWebSocket) and not connection.closing:
                gauge.enlist(connection, now)
        for sentinel in gauge.idle():
            cast(FrameConnection, sentinel).probe(gauge.probe(sentinel, now))

    def reuse(self, transport: asyncio.Transport, rest: bytes) -> None:
        """A kept-alive connection whose answer is complete: read its next request."""
        protocol = FastProtocol(self.config, self.server_state, self.app_state, self.loop, context=self)
        protocol.connection_made(transport)
        transport.set_protocol(protocol)
        if not transport.is_reading():
            transport.resume_reading()
        if rest:
            protocol.data_received(rest)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


class Flushable(Protocol):
    def flush(self) -> None: ...


_contexts: WeakKeyDictionary[ServerState, FastContext] = WeakKeyDictionary()


def _fallback_class() -> Callable[..., asyncio.Protocol]:
    """The protocol ``tidings serve`` would use without the fast path."""
    return GuardedHttpToolsProtocol


class FastProtocol(asyncio.Protocol):
    """A new connection: answer an owned upgrade here, hand anything else to uvicorn."""

    __slots__ = ("_admitting", "_buf", "_ctx", "_end", "_head", "_timer", "_transport")

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        context: FastContext | None = None,
    ) -> None:
        if context is None:  # uvicorn's call, for a new connection
            if not config.loaded:
                config.load()
            context = FastContext.of(config, server_state, app_state, _loop)
        self._ctx = context
        self._buf = b""
        self._head: RequestHead | None = None  # once the head of an owned route is read
        self._end = 0  # where it ends in _buf
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self._admitting = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        ctx = self._ctx
        track_connection(ctx.server_state, self)
        if ctx.routes:
            self._timer = ctx.loop.call_later(ctx.handshake_timeout, self._transport.close)

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        if self._admitting:  # frames sent before our 101: kept for the connection
            self._buf = buf
            if len(buf) > PRE_OPEN_BYTES and self._transport is not None:
                self._transport.pause_reading()  # resumed by the upgrade (_admit)
            return
        head = self._head
        if head is None:
            route = match_route(buf, self._ctx.routes)
            if route is None:
                self._buf = buf
                return
            if route is False:
                self._hand_over(buf)
                return
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self._ctx.max_head:
                    self._refuse(431, f"request head over {self._ctx.max_head} bytes")
                elif _BARE_LF.search(buf) is not None:  # such a head would never end here
                    self._refuse(400, "invalid HTTP request: lines must end with CRLF")
                else:
                    self._buf = buf
                return
            end += 4
            if end > self._ctx.max_head:
                self._refuse(431, f"request head over {self._ctx.max_head} bytes")
                return
            try:
                done = HeadParser().feed(buf[:end])
            except HeadError:
                done = None
            if done is None:
                self._refuse(400, "invalid HTTP request")
                return
            head = self._head = done[0]
            self._end = end
        rest = buf[self._end :]
        if head.method == "POST":  # POST /api/publish
            length = publish_length(head, self._ctx.max_request)
            if length is None:  # not one the fast path takes: the ASGI app answers it
                self._hand_over(buf)
            elif len(rest) < length:
                self._buf = buf  # the body is still coming
            elif not serve_publish(
                self._ctx, self._transport, head, rest[:length], rest[length:], self._detach
            ):
                self._hand_over(buf)
            return
        if not head.upgrade:  # a plain GET: /sse, /stream, /poll here; anything else is ASGI's
            if owned(head):
                serve_http(self._ctx, self._detach(), head, rest)
                return
            self._hand_over(buf)
            return
        if head.path not in self._ctx.ws_paths:  # an upgrade of /sse …: the ASGI app refuses it
            self._hand_over(buf)
            return
        self._upgrade(head, rest)

    def _detach(self) -> asyncio.Transport:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        forget_connection(self._ctx.server_state, self)
        self._buf = b""
        self._head = None
        assert self._transport is not None
        return self._transport

    def _hand_over(self, buf: bytes) -> None:
        """Give the connection to uvicorn's HTTP protocol, replaying what was read."""
        ctx = self._ctx
        transport = self._detach()
        protocol = ctx.fallback(
            config=ctx.config, server_state=ctx.server_state, app_state=ctx.app_state, _loop=ctx.loop
        )
        protocol.connection_made(transport)
        transport.set_protocol(protocol)
        protocol.data_received(buf)

    def _refuse(self, status: int, message: str) -> None:
        transport = self._detach()
        transport.write(http_error_response(status, message))
        transport.close()

    def _upgrade(self, head: RequestHead, rest: bytes) -> None:
        ctx = self._ctx
        try:
            accept = check_handshake(head.method, head.headers)
        except HandshakeError as exc:
            self._refuse(exc.status, exc.message)
            return
        if head.path == "/ws-echo":
            deflate = ctx.negotiate(head.headers)
            EchoWebSocket(ctx, self._detach(), deflate).open(
                handshake_response(accept, extensions(deflate)), rest
            )
            return
        self._admitting = True
        self._buf = rest
        ctx.spawn(self._admit(head, accept))

    async def _admit(self, head: RequestHead, accept: str) -> None:
        """Ask the node (tokens may need I/O), then upgrade or refuse."""
        ctx = self._ctx
        assert ctx.node is not None and self._transport is not None
        transport = self._transport
        peer = transport.get_extra_info("peername")
        scope = {
            "type": "websocket",
            "headers": head.raw_headers,
            "query_string": head.query,
            "client": tuple(peer[:2]) if peer else None,
        }
        try:
            session, lease, caller = await admit(ctx.node, scope)
        except Refused as refused:
            if not transport.is_closing():
                self._refuse_upgrade(accept, refused)
            return
        if transport.is_closing():  # the client left meanwhile
            lease.release()
            return
        rest = self._buf
        if not transport.is_reading():
            transport.resume_reading()  # paused by data_received; read by the new protocol
        address = ctx.node.security.client_ip(scope)
        deflate = ctx.negotiate(head.headers)
        connection = FastWebSocket(ctx, self._detach(), ctx.node, session, lease, address, caller, deflate)
        # like RequestIdMiddleware on the ASGI path: the client's id if sane, else a new one;
        # echoed in the 101 and carried by the connection's open log line
        rid = request_id_for(head.headers.get("x-request-id"))
        request_id.set(rid)  # this task's context only
        connection.open(handshake_response(accept, [("X-Request-ID", rid), *extensions(deflate)]), rest)

    def _refuse_upgrade(self, accept: str, refused: Refused) -> None:
        if not refused.accept:
            self._refuse(403, refused.reason.reason)
            return
        transport = self._detach()
        reason = refused.reason
        transport.write(handshake_response(accept) + close_frame(int(reason.code), reason.reason))
        transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._detach()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: a connection still in its request head is closed."""
        if self._transport is not None:
            self._transport.close()


def serve_http(ctx: FastContext, transport: asyncio.Transport, head: RequestHead, rest: bytes) -> None:
    """Answer an :func:`~.exchange.owned` request on ``transport`` (``rest``: bytes read after
    its head)."""
    kind = FastSSE if head.path == "/sse" else FastNDJSON if head.path == "/stream" else FastPoll
    ctx.spawn(kind(ctx, transport, head, rest).run())
