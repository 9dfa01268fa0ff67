"""The tidings client's WebSocket on the owned-socket engine: commands from text frames (the
shared :class:`~tidings.transports.websocket.CommandHandler`), publications' pre-built frames out
(plain, compressed or chained: :class:`~tidings.core.wire.deflate.DeflateSender`; deltas:
:mod:`tidings.core.delta`), over a :class:`~.frames.FrameConnection`.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from tidings.auth.limits import ConnectionLease
from tidings.core.session import Session
from tidings.core.wire.deflate import Deflate
from tidings.core.wire.frames import EncodedPublication
from tidings.engines.sockets.frames import FrameConnection
from tidings.node import Node
from tidings.proxy import Caller
from tidings.transports.websocket import HANDLER_SLOTS, CommandHandler

if TYPE_CHECKING:
    from tidings.engines.sockets.protocol import FastContext

__all__ = ["FastWebSocket"]


class FastWebSocket(FrameConnection, CommandHandler):
    """A tidings client on the fast path: commands from text frames, pre-built frames out."""

    __slots__ = HANDLER_SLOTS
    counts_wire = True

    def __init__(
        self,
        ctx: FastContext,
        transport: asyncio.Transport,
        node: Node,
        session: Session,
        lease: ConnectionLease | None = None,
        address: str | None = None,
        caller: Caller | None = None,
        deflate: Deflate | None = None,
    ) -> None:
        FrameConnection.__init__(self, ctx, transport, ctx.ws_config, ctx.max_frames, session, deflate)
        CommandHandler.__init__(self, node, session, lease, address, caller)

    def started(self) -> None:
        self.node.register(self)

    def receives(self, channel: str) -> bool:
        return channel in self.session.subscriptions

    # the hub's Subscriber, hot: one append to the machine's list (which takes nothing once closing)
    def deliver(self, publication: EncodedPublication) -> None:
        # the hot path, once per publication and subscriber: one append, and the first one of a
        # loop iteration schedules the write (_soon, inlined)
        sent = publication if self.deltas is None else self.deltas.outgoing(publication)
        deflate = self._deflate
        frame = sent.ws_frame if deflate is None else deflate.publication(sent)
        if self.wire_log is not None:
            self._log_wire(publication, sent, frame)
        pending = self.machine.pending
        if pending:  # a write is scheduled already (a truth test, cheaper than len() == 1)
            pending.append(frame)
            return
        pending.append(frame)
        if pending:  # (once closed, the list takes nothing)
            ctx = self._ctx
            if ctx.coalesce:
                ctx.mark_dirty(self)
            else:
                self.flush()

    def replay(self, publication: EncodedPublication) -> None:
        deflate = self._deflate
        frame = publication.ws_frame if deflate is None else deflate.publication(publication)
        if self.wire_log is not None:
            self._log_wire(publication, publication, frame)
        if self.machine.replay(frame):
            self._soon()

    def _log_wire(self, publication: EncodedPublication, sent: EncodedPublication, frame: bytes) -> None:
        """For ``wire_stats``: the bytes of the frame written for ``publication`` (``sent``: it,
        or its delta), against the same message uncompressed and the publication in full."""
        assert self.wire_log is not None
        pub = publication.publication
        self.wire_log.append(
            (
                pub.channel,
                pub.offset,
                len(frame),
                len(sent.ws_frame),
                len(publication.ws_frame),
                bool(frame[0] & 0x40),
                sent is not publication,
            )
        )

    grants_ended = CommandHandler.grants_ended  # not FrameConnection's

    def queue(self, frame: str) -> None:
        self.send_message(frame.encode())

    def start_commands(self) -> None:
        self._ctx.spawn(self.run_commands())

    def on_slow(self) -> None:
        self.node.metrics.outbox_overflow(self.transport)

    def on_lost(self) -> None:
        self._ctx.spawn(self.release())
