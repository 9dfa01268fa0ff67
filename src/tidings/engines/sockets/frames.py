"""A WebSocket connection on the owned-socket engine, after the handshake: the driver of
:class:`~tidings.machines.websocket.WebSocketMachine` over an asyncio transport, which the tidings
client (:mod:`.websocket`) and the Autobahn echo (:mod:`.echo`) build on.

The driver moves bytes: the client's through the frame parser
(:class:`~tidings.core.wire.websocket.FrameParser`) into the machine, the machine's frames to
the transport, coalesced into one write per loop iteration (:meth:`FastContext.mark_dirty
<tidings.engines.sockets.protocol.FastContext.mark_dirty>`); the transport's write buffer is the
backlog the machine judges. It keeps one timer (the machine's deadline) and answers the
flow-control pongs (:mod:`tidings.flow`). Every rule is the machine's. With permessage-deflate
(``deflate``) a publication's compressed frame is the one its
:class:`~tidings.core.wire.frames.EncodedPublication` built once for every such subscriber.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from tidings.core.session import Session
from tidings.core.wire import websocket as wire
from tidings.core.wire.deflate import Deflate, DeflateSender
from tidings.engines.timer import Timed
from tidings.engines.transport import cut
from tidings.engines.uvicorn_internals import apply_mask as fast_unmask  # websockets' C helper
from tidings.engines.uvicorn_internals import forget_connection, track_connection
from tidings.machines.websocket import ABORTED, CLOSED, CLOSING, OPEN, WIRE_FRAMES, WebSocketMachine

if TYPE_CHECKING:
    from tidings.engines.sockets.protocol import FastContext
    from tidings.machines.websocket import WebSocketConfig

__all__ = ["FrameConnection"]


class FrameConnection(asyncio.Protocol, Timed):
    """A WebSocket after the handshake: frames in and out of its machine, one timer.

    Subclasses say what a message means (:meth:`run_commands`) and what happens once the socket
    is gone (:meth:`on_lost`). Every frame to the client goes through the machine, so frames
    leave in the order they were queued.
    """

    __slots__ = ("_ctx", "_deflate", "_parser", "_t", "machine")

    def __init__(
        self,
        ctx: FastContext,
        transport: asyncio.Transport,
        config: WebSocketConfig,
        max_frames: int | None = None,
        session: Session | None = None,
        deflate: Deflate | None = None,
    ) -> None:
        self._ctx = ctx
        self._t = transport
        self._deflate = None if deflate is None else DeflateSender(deflate)
        self._parser = wire.FrameParser(config.max_frame_bytes, max_frames, fast_unmask, deflate is not None)
        self.machine: WebSocketMachine[bytes] = WebSocketMachine(
            config, ctx.loop.time(), WIRE_FRAMES, session
        )
        self._timer = self._timer_at = None

    def open(self, response: bytes, rest: bytes = b"") -> None:
        """Send the 101 response, take over the transport, read what followed the head."""
        ctx = self._ctx
        self._t.write(response)
        self._t.set_protocol(self)
        track_connection(ctx.server_state, self)
        self.started()
        self.act()
        if rest:
            self.data_received(rest)

    @property
    def closing(self) -> bool:  # nothing more is sent
        return self.machine.state != OPEN

    # writing ---------------------------------------------------------------------------------

    def send_message(self, payload: bytes, opcode: int = wire.OP_TEXT) -> None:
        """Queue a message (compressed if negotiated and worth it)."""
        deflate = self._deflate
        self.send_frame(
            wire.encode_frame(opcode, payload) if deflate is None else deflate.message(payload, opcode)
        )

    def send_frame(self, frame: bytes) -> None:
        """Queue a complete frame behind everything queued before it (dropped once closing)."""
        if self.machine.push(frame):
            self._soon()

    def _soon(self) -> None:
        if self._ctx.coalesce:
            self._ctx.mark_dirty(self)
        else:
            self.flush()

    def flush(self) -> None:
        """Write the pending frames in one call (the context calls it once per iteration)."""
        machine = self.machine
        frames = machine.pending
        if frames:
            # the hot path, once per loop iteration and connection written to: take() inlined
            # for an open connection (this engine measures its backlog itself: no count_queue)
            machine.pending = []
        else:
            frames = machine.take()  # closing: what was pending then
        if frames:
            transport = self._t
            transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
            if machine.written(transport.get_write_buffer_size()):
                self.act()

    def probe(self, token: bytes) -> None:
        """A flow-control ping, behind every frame written or queued so far."""
        if self.machine.push(wire.encode_frame(wire.OP_PING, token)):
            self.flush()

    def act(self) -> None:
        """Carry out what the machine says: write, close or cut, pause reading, the timer."""
        machine = self.machine
        transport = self._t
        frames = machine.take()
        farewell = machine.take_farewell()
        if farewell is not None:
            frames.append(wire.close_frame(*farewell))
        if frames:
            transport.write(b"".join(frames))
            if machine.written(transport.get_write_buffer_size()):
                self.act()
                return
        if machine.take_overflow():
            self.on_slow()
        state = machine.state
        if state == CLOSED:
            transport.close()
        elif state == ABORTED:
            cut(transport)
        elif state <= CLOSING and machine.reading != transport.is_reading():
            if machine.reading:
                transport.resume_reading()
            else:
                transport.pause_reading()
        self.arm(self._ctx.loop, machine.deadline)

    def _tick(self) -> None:
        ended = self.machine.tick(self._ctx.loop.time(), time.time())
        if ended:
            self.grants_ended(ended)
        self.act()

    # reading ---------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        ctx = self._ctx
        machine = self.machine
        machine.heard(ctx.loop.time())
        for event in self._parser.feed(data):
            if isinstance(event, wire.Pong):
                if ctx.flow is not None:
                    token = ctx.flow.echoed(self, event.payload, ctx.loop.time())
                    if token is not None:
                        self.probe(token)
            else:
                machine.receive(event)
        if machine.start_commands():
            self.start_commands()
        self.act()

    def connection_lost(self, exc: Exception | None) -> None:
        self.machine.gone()
        self.arm(self._ctx.loop, None)
        if self._ctx.flow is not None:
            self._ctx.flow.gauge.forget(self)
        forget_connection(self._ctx.server_state, self)
        self.on_lost()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: ask the client to reconnect elsewhere."""
        if self.machine.drain():
            self.act()

    # for subclasses ----------------------------------------------------------------------------

    def started(self) -> None:
        return None

    def start_commands(self) -> None:
        raise NotImplementedError

    def grants_ended(self, channels: list[str]) -> None:
        return None

    def on_slow(self) -> None:
        return None

    def on_lost(self) -> None:
        return None

    def receives(self, channel: str) -> bool:
        """Whether publications on ``channel`` come here (a flow-control sentinel's question)."""
        return False
