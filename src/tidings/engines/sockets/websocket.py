"""WebSocket connections on the owned-socket engine: framing, keepalive, close handshake, and
the tidings client (:class:`FastWebSocket`) and the Autobahn echo (:class:`EchoWebSocket`)."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

from tidings.auth.limits import ConnectionLease
from tidings.core.disconnect import CloseCode, Disconnect, disconnect
from tidings.core.session import Session
from tidings.core.wire.frames import EncodedPublication, ws_text_frame
from tidings.core.wire.websocket import (
    OP_BINARY,
    OP_PING,
    OP_PONG,
    BinaryMessage,
    CloseReceived,
    FrameParser,
    Ping,
    Pong,
    ProtocolError,
    TextMessage,
    close_frame,
    encode_frame,
)
from tidings.engines.uvicorn_internals import apply_mask as fast_unmask  # websockets' C helper
from tidings.machines.backlog import Backlog
from tidings.node import Node
from tidings.transports.websocket import HANDLER_SLOTS, CommandHandler

if TYPE_CHECKING:
    from tidings.engines.sockets.protocol import FastContext

__all__ = ["EchoWebSocket", "FastWebSocket", "FrameConnection"]

log = logging.getLogger("tidings.fast")

OPEN, CLOSING, CLOSED = 0, 1, 2
MAX_BACKLOG = 32  # commands waiting behind the one being carried out, before reading pauses
ECHO_MAX_SIZE = 64 * 2**20


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
        self._parser = FrameParser(max_size, max_frames, fast_unmask)
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
