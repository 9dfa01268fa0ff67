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
shared with the ASGI path) driven by the sans-I/O framing of :mod:`.websocket`. Fan-out calls
:meth:`FastWebSocket.deliver`, which appends the publication's pre-built frame (``ws_frame``, the
same bytes for every subscriber) to the connection's pending list; one ``call_soon`` per loop
iteration writes each dirty connection's frames with one ``transport.write``. The transport's
write buffer is the outbox: past ``limits.outbox_bytes`` the client is closed as slow (4008) and
further frames are dropped. No task, queue or event exists per idle connection: keepalive is one
timer handle, and a task runs only while a client's commands are being carried out.

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
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, cast
from weakref import WeakKeyDictionary

from uvicorn.config import Config
from uvicorn.server import ServerState

from tidings.auth.limits import ConnectionLease
from tidings.core.disconnect import CloseCode, Disconnect, disconnect
from tidings.core.session import Session
from tidings.core.wire.frames import EncodedPublication, ws_text_frame
from tidings.flow import PublishFlow
from tidings.logs import request_id, request_id_for
from tidings.node import Node
from tidings.outbox import Backlog
from tidings.server.fast.http import HeadError, HeadParser, RequestHead, match_route
from tidings.server.fast.publish import PUBLISH_ROUTE, publish_length, serve_publish
from tidings.server.fast.streams import HTTP_ROUTES, owned, serve_http
from tidings.server.fast.websocket import (
    OP_BINARY,
    OP_PING,
    OP_PONG,
    BinaryMessage,
    CloseReceived,
    FrameParser,
    HandshakeError,
    Ping,
    Pong,
    ProtocolError,
    TextMessage,
    check_handshake,
    close_frame,
    encode_frame,
    handshake_response,
    http_error_response,
)
from tidings.transports.http_common import close_timeout
from tidings.transports.websocket import HANDLER_SLOTS, CommandHandler, Refused, admit

__all__ = ["EchoWebSocket", "FastContext", "FastProtocol", "FastWebSocket"]

log = logging.getLogger("tidings.fast")

OPEN, CLOSING, CLOSED = 0, 1, 2
MAX_BACKLOG = 32  # commands waiting behind the one being carried out, before reading pauses
ECHO_MAX_SIZE = 64 * 2**20
# Bytes a client may send after its upgrade request while admission waits (a JWKS fetch …);
# past them reading pauses until the 101, as the ASGI engine's protocol does.
PRE_OPEN_BYTES = 64 * 1024
_BARE_LF = re.compile(rb"(?<!\r)\n")


class FastContext:
    """What every connection of one uvicorn server shares: the node, limits, uvicorn's state,
    the ASGI fallback protocol, and the list of connections with frames to write."""

    __slots__ = ("_dirty", "_next_probe", "_scheduled", "app_state", "close_timeout", "coalesce",
                 "config", "echo", "fallback", "flow", "handshake_timeout", "idle_timeout", "loop",
                 "max_frame", "max_frames", "max_head", "max_request", "node", "outbox_bytes",
                 "ping_interval", "routes", "server_state", "tasks", "ws_paths")

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 loop: asyncio.AbstractEventLoop) -> None:
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
        if self.node is not None:
            settings = self.node.settings
            limits = settings.limits
            if settings.websocket:
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
            self.max_frame = limits.max_frame_bytes
            self.max_request = limits.max_request_bytes
            self.max_head = limits.max_header_bytes
            self.max_frames = limits.max_message_frames
            self.outbox_bytes = limits.outbox_bytes
            self.ping_interval = limits.ping_interval
            self.idle_timeout = limits.idle_timeout
            self.handshake_timeout = limits.handshake_timeout
            self.close_timeout = close_timeout(settings)
        self.routes = tuple(routes)
        self.ws_paths = frozenset(ws_paths)  # the owned routes that take a WebSocket upgrade

    @classmethod
    def of(cls, config: Config, server_state: ServerState, app_state: dict[str, Any],
           loop: asyncio.AbstractEventLoop | None) -> FastContext:
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
            if isinstance(connection, FastWebSocket) and not connection._state:
                gauge.enlist(connection, now)
        for sentinel in gauge.idle():
            cast(FrameConnection, sentinel).probe(gauge.probe(sentinel, now))

    def reuse(self, transport: asyncio.Transport, rest: bytes) -> None:
        """A kept-alive connection whose answer is complete: read its next request."""
        protocol = FastProtocol(self.config, self.server_state, self.app_state, self.loop,
                                context=self)
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
    from tidings.server.protocols import GuardedHttpToolsProtocol

    return GuardedHttpToolsProtocol


class FastProtocol(asyncio.Protocol):
    """A new connection: answer an owned upgrade here, hand anything else to uvicorn."""

    __slots__ = ("_admitting", "_buf", "_ctx", "_end", "_head", "_timer", "_transport")

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *,
                 context: FastContext | None = None) -> None:
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
        ctx.server_state.connections.add(self)  # type: ignore[arg-type]
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
        rest = buf[self._end:]
        if head.method == "POST":  # POST /api/publish
            length = publish_length(head, self._ctx.max_request)
            if length is None:  # not one the fast path takes: the ASGI app answers it
                self._hand_over(buf)
            elif len(rest) < length:
                self._buf = buf  # the body is still coming
            elif not serve_publish(self._ctx, self._transport, head, rest[:length],
                                   rest[length:], self._detach):
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
        self._ctx.server_state.connections.discard(self)
        self._buf = b""
        self._head = None
        assert self._transport is not None
        return self._transport

    def _hand_over(self, buf: bytes) -> None:
        """Give the connection to uvicorn's HTTP protocol, replaying what was read."""
        ctx = self._ctx
        transport = self._detach()
        protocol = ctx.fallback(config=ctx.config, server_state=ctx.server_state,
                                app_state=ctx.app_state, _loop=ctx.loop)
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
            EchoWebSocket(ctx, self._detach()).open(handshake_response(accept), rest)
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
        scope = {"type": "websocket", "headers": head.raw_headers, "query_string": head.query,
                 "client": tuple(peer[:2]) if peer else None}
        try:
            session, lease = await admit(ctx.node, scope)
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
        connection = FastWebSocket(ctx, self._detach(), ctx.node, session, lease, address)
        # like RequestIdMiddleware on the ASGI path: the client's id if sane, else a new one;
        # echoed in the 101 and carried by the connection's open log line
        rid = request_id_for(head.headers.get("x-request-id"))
        request_id.set(rid)  # this task's context only
        connection.open(handshake_response(accept, [("X-Request-ID", rid)]), rest)

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


class FrameConnection(asyncio.Protocol):
    """A WebSocket after the handshake: framing, keepalive, close handshake, batched writes.

    Subclasses say what a message means (:meth:`on_text`, :meth:`on_binary`) and what happens
    once the socket is gone (:meth:`on_lost`). Every frame to the client goes through
    :meth:`send_frame` (or ``deliver``), so frames leave in the order they were queued.
    """

    __slots__ = ("_ctx", "_last_rx", "_parser", "_pending", "_slow", "_state", "_t", "_timer")

    def __init__(self, ctx: FastContext, transport: asyncio.Transport, max_size: int,
                 outbox_bytes: int, max_frames: int | None = None) -> None:
        self._ctx = ctx
        self._slow = Backlog(outbox_bytes)  # the write buffer is the outbox
        self._t = transport
        self._parser = FrameParser(max_size, max_frames)
        self._pending: list[bytes] | None = None
        self._state = OPEN
        self._last_rx = ctx.loop.time()
        self._timer: asyncio.TimerHandle | None = None

    def open(self, response: bytes, rest: bytes = b"") -> None:
        """Send the 101 response, take over the transport, read what followed the head."""
        ctx = self._ctx
        self._t.write(response)
        self._t.set_protocol(self)
        ctx.server_state.connections.add(self)  # type: ignore[arg-type]
        self._timer = ctx.loop.call_later(ctx.ping_interval, self._keepalive)
        self.started()
        if rest:
            self.data_received(rest)

    # writing ---------------------------------------------------------------------------------

    def send_frame(self, frame: bytes) -> None:
        """Queue a complete frame behind everything queued before it (dropped once closing)."""
        if self._state:
            return
        ctx = self._ctx
        if not ctx.coalesce:
            self._t.write(frame)
            self._check_buffer()
            return
        pending = self._pending
        if pending is None:
            self._pending = [frame]
            ctx.mark_dirty(self)
        else:
            pending.append(frame)

    def flush(self) -> None:
        """Write the pending frames in one call (the context calls it once per iteration)."""
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        self._t.write(pending[0] if len(pending) == 1 else b"".join(pending))
        self._check_buffer()

    def probe(self, token: bytes) -> None:
        """A flow-control ping, behind every frame written or queued so far."""
        if self._state:
            return  # a ping after the close frame would break the protocol
        frame = encode_frame(OP_PING, token)
        if self._pending is None:
            self._t.write(frame)
        else:
            self._pending.append(frame)

    def _check_buffer(self) -> None:
        if self._slow.overflows(self._t.get_write_buffer_size()):
            self._overflow()

    def send_replay(self, frame: bytes) -> None:
        """Queue a frame of a resume's replay: it does not count against the outbox limit."""
        self._slow.allow(len(frame))
        self.send_frame(frame)

    def _overflow(self) -> None:
        self._pending = None  # what the client could not take is dropped, the close goes last
        self.close(int(CloseCode.SLOW_CONSUMER), disconnect(CloseCode.SLOW_CONSUMER).reason)

    def close(self, code: int | None, reason: str = "", *, now: bool = False) -> None:
        """Start the closing handshake after the pending frames (``now``: do not wait for it)."""
        if self._state:
            return
        self._state = CLOSING
        frames = self._pending or []
        self._pending = None
        frames.append(close_frame(code, reason))
        self._t.write(b"".join(frames))
        self._cancel_timer()
        if now:
            self._t.close()
        else:
            self._timer = self._ctx.loop.call_later(self._ctx.close_timeout, self._t.abort)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _keepalive(self) -> None:
        ctx = self._ctx
        idle = ctx.loop.time() - self._last_rx
        remaining = ctx.idle_timeout - idle
        if remaining <= 0:
            self._timer = None
            self.close(int(CloseCode.INTERNAL_ERROR), "keepalive timeout")
            return
        if idle >= ctx.ping_interval / 2:
            self.send_frame(b"\x89\x00")  # an empty ping
        self._timer = ctx.loop.call_later(min(ctx.ping_interval, remaining), self._keepalive)

    # reading ---------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._last_rx = self._ctx.loop.time()
        for event in self._parser.feed(data):
            if self._state:
                if isinstance(event, CloseReceived | ProtocolError):
                    self._t.close()  # the client answered our close (or gave up): done
                    return
                continue  # after our close frame, client messages are not read
            if isinstance(event, TextMessage):
                self.on_text(event.text)
            elif isinstance(event, Ping):
                self.send_frame(encode_frame(OP_PONG, event.payload))
            elif isinstance(event, Pong):
                flow = self._ctx.flow
                if flow is not None:
                    token = flow.echoed(self, event.payload, self._ctx.loop.time())
                    if token is not None:
                        self.probe(token)
            elif isinstance(event, CloseReceived):
                self.on_peer_close(event.code)
                self.close(event.code, now=True)  # echo the code, then close the socket
            elif isinstance(event, ProtocolError):
                self.close(event.code, event.reason, now=True)
            elif isinstance(event, BinaryMessage):
                self.on_binary(event.data)

    def eof_received(self) -> bool | None:
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = CLOSED
        self._pending = None
        self._cancel_timer()
        if self._ctx.flow is not None:
            self._ctx.flow.gauge.forget(self)
        self._ctx.server_state.connections.discard(self)
        self.on_lost()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: ask the client to reconnect elsewhere."""
        self.close(int(CloseCode.SERVICE_RESTART), disconnect(CloseCode.SERVICE_RESTART).reason)

    # for subclasses ----------------------------------------------------------------------------

    def started(self) -> None:
        return None

    def on_peer_close(self, code: int | None) -> None:
        return None

    def on_text(self, text: str) -> None:
        raise NotImplementedError

    def on_binary(self, data: bytes) -> None:
        raise NotImplementedError

    def on_lost(self) -> None:
        return None

    def receives(self, channel: str) -> bool:
        """Whether publications on ``channel`` come here (a flow-control sentinel's question)."""
        return False


class FastWebSocket(FrameConnection, CommandHandler):
    """A tidings client on the fast path: commands from text frames, pre-built frames out."""

    __slots__ = ("_backlog", "_closing", "peer_close", *HANDLER_SLOTS)

    def __init__(self, ctx: FastContext, transport: asyncio.Transport, node: Node,
                 session: Session, lease: ConnectionLease | None = None,
                 address: str | None = None) -> None:
        FrameConnection.__init__(self, ctx, transport, ctx.max_frame, ctx.outbox_bytes,
                                 ctx.max_frames)
        CommandHandler.__init__(self, node, session, lease, address)
        self._backlog: deque[str] | None = None
        self._closing: tuple[int, str] | None = None  # what the server closed with
        self.peer_close: int | None = None

    def started(self) -> None:
        self.node.register(self)

    def close_info(self) -> tuple[int | None, str, str]:
        """``(code, reason, by)`` for the node's close log line and metrics."""
        if self._closing is not None:
            return self._closing[0], self._closing[1], "server"
        return self.peer_close or int(CloseCode.NORMAL), "", "client"

    def on_peer_close(self, code: int | None) -> None:
        self.peer_close = code

    def receives(self, channel: str) -> bool:
        return channel in self.session.subscriptions

    def close(self, code: int | None, reason: str = "", *, now: bool = False) -> None:
        if not self._state and self.peer_close is None and code is not None:
            self._closing = (code, reason)
        super().close(code, reason, now=now)

    # the hub's Subscriber, hot: one list append per publication and subscriber
    def deliver(self, publication: EncodedPublication) -> None:
        if self._state:
            return
        ctx = self._ctx
        if not ctx.coalesce:
            self.send_frame(publication.ws_frame)
            return
        pending = self._pending
        if pending is None:
            self._pending = [publication.ws_frame]
            ctx.mark_dirty(self)
        else:
            pending.append(publication.ws_frame)

    def replay(self, publication: EncodedPublication) -> None:
        self.send_replay(publication.ws_frame)

    def _overflow(self) -> None:
        self.node.metrics.outbox_overflow(self.transport)
        super()._overflow()

    def queue(self, frame: str) -> None:
        self.send_frame(ws_text_frame(frame.encode()))

    def disconnect(self, reason: Disconnect) -> None:
        self.close(int(reason.code), reason.reason)

    def on_binary(self, data: bytes) -> None:
        self.disconnect(disconnect(CloseCode.UNSUPPORTED_DATA))

    def on_text(self, text: str) -> None:
        backlog = self._backlog
        if backlog is not None:  # a command is being carried out: this one waits its turn
            backlog.append(text)
            if len(backlog) >= MAX_BACKLOG:
                self._t.pause_reading()
            return
        self._backlog = deque()
        self._ctx.spawn(self._run(text))

    async def _run(self, text: str) -> None:
        try:
            while True:
                await self.handle(text)
                backlog = self._backlog
                if self._state or not backlog:
                    break
                text = backlog.popleft()
        except Exception:
            log.exception("a WebSocket command failed")
            self.disconnect(disconnect(CloseCode.INTERNAL_ERROR))
        finally:
            self._backlog = None
            if not self._state and not self._t.is_reading():
                self._t.resume_reading()

    def on_lost(self) -> None:
        self._ctx.spawn(self.release())


class EchoWebSocket(FrameConnection):
    """``/ws-echo`` (setting ``server.debug_echo``): echoes messages, for the Autobahn suite."""

    __slots__ = ()

    def __init__(self, ctx: FastContext, transport: asyncio.Transport) -> None:
        super().__init__(ctx, transport, ECHO_MAX_SIZE, 2 * ECHO_MAX_SIZE)

    def on_text(self, text: str) -> None:
        self.send_frame(ws_text_frame(text.encode()))

    def on_binary(self, data: bytes) -> None:
        self.send_frame(encode_frame(OP_BINARY, data))
