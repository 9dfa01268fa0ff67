"""``/ws`` on the ASGI engine: frames through an Outbox and one writer task per connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from tidings.auth.limits import ConnectionLease
from tidings.core.disconnect import CloseCode, Disconnect, disconnect
from tidings.core.session import Session
from tidings.core.wire.frames import EncodedPublication
from tidings.hub import LatencyObserver
from tidings.node import Node
from tidings.outbox import Outbox
from tidings.transports.http_common import Receive, Scope, Send
from tidings.transports.websocket import HANDLER_SLOTS, CommandHandler, Refused, admit

__all__ = ["CLOSE_TIMEOUT", "WebSocketConnection", "WebSocketEndpoint"]

log = logging.getLogger("tidings.ws")


CLOSE_TIMEOUT = 5.0  # seconds a closing ASGI connection waits for its close frame to be written


class WebSocketConnection(CommandHandler):
    """One client's WebSocket over ASGI: its frames go through an Outbox and a writer task."""

    __slots__ = ("_closing", "_probe", "_sending", "outbox", "peer_close", "reader", "send",
                 "writer", *HANDLER_SLOTS)

    def __init__(self, node: Node, send: Send, session: Session,
                 lease: ConnectionLease | None = None, address: str | None = None) -> None:
        self.send = send
        limits = node.settings.limits
        self.outbox: Outbox[str] = Outbox(limits.outbox_bytes, self._overflow)
        self._closing: Disconnect | None = None
        self.writer: asyncio.Task[None] | None = None
        self.reader: asyncio.Task[Any] | None = None  # set while the endpoint reads frames
        self._sending = False
        self._probe: tuple[int, LatencyObserver] | None = None
        self.peer_close: int | None = None
        super().__init__(node, session, lease, address)

    # Subscriber ------------------------------------------------------------------------------

    def deliver(self, publication: EncodedPublication) -> None:
        self.outbox.push(publication.ws_text)

    def replay(self, publication: EncodedPublication) -> None:
        self.outbox.push(publication.ws_text, bounded=False)

    # Connection ------------------------------------------------------------------------------

    def disconnect(self, reason: Disconnect) -> None:
        if self._closing is None:
            self._closing = reason
        self.outbox.close()
        self._interrupt_send()

    def _overflow(self) -> None:
        self._closing = self._closing or disconnect(CloseCode.SLOW_CONSUMER)
        self.node.metrics.outbox_overflow(self.transport)
        self._interrupt_send()

    def _interrupt_send(self) -> None:
        """Stop a write that waits on a socket the peer no longer drains (it never would end)."""
        if self._sending and self.writer is not None:
            self.writer.cancel()

    def close_info(self) -> tuple[int | None, str, str]:
        """``(code, reason, by)`` for the node's close log line and metrics."""
        if self._closing is not None:
            return int(self._closing.code), self._closing.reason, "server"
        return self.peer_close or int(CloseCode.NORMAL), "", "client"

    def mark_latency(self, time_ms: int, observe: LatencyObserver) -> None:
        """Observe publish → write for the publication just queued (the hub samples)."""
        self._probe = (time_ms, observe)

    # writing ---------------------------------------------------------------------------------

    def queue(self, frame: str) -> None:
        self.outbox.push(frame)

    async def write_loop(self) -> None:
        """Write the outbox until it closes, then the close frame.

        A client that stops reading fills its socket, and a write then waits for ever; closing
        the connection (overflow: 4008, or any disconnect) interrupts that write. The close frame
        gets :data:`CLOSE_TIMEOUT` seconds; a peer that does not take it in that time is not
        waited for: the endpoint's reader is stopped, so the connection leaves the node.
        """
        send = self.send
        outbox = self.outbox
        try:
            while True:
                batch = await outbox.wait_batch()
                if not batch:
                    break
                probe, self._probe = self._probe, None
                for frame in batch:
                    if outbox.closed:  # overflowed or disconnected: what is left is dropped
                        break
                    self._sending = True
                    try:
                        await send({"type": "websocket.send", "text": frame})
                    finally:
                        self._sending = False
                if probe is not None:
                    probe[1](probe[0])
        except asyncio.CancelledError:
            if not outbox.closed:
                raise  # cancelled from outside, not interrupted by a close
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except Exception:  # the peer went away mid-write; the reader notices the disconnect
            return
        reason = self._closing or disconnect(CloseCode.NORMAL)
        try:
            await asyncio.wait_for(send({"type": "websocket.close", "code": int(reason.code),
                                         "reason": reason.reason}), CLOSE_TIMEOUT)
        except TimeoutError:
            self._stop_reader()
        except Exception:
            return

    def _stop_reader(self) -> None:
        reader = self.reader
        if reader is not None and not reader.done():
            reader.cancel()

    async def cleanup(self) -> None:
        self.outbox.close()
        await self.release()


class WebSocketEndpoint:
    """The ASGI endpoint of ``/ws``."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        node = self.node
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        try:
            session, lease = await admit(node, scope)
        except Refused as refused:
            if refused.accept:
                await send({"type": "websocket.accept"})
                await _close(send, refused.reason)
            else:  # before accept: the server answers the upgrade with 403
                await send({"type": "websocket.close", "code": int(refused.reason.code)})
            return
        rid = scope.get("state", {}).get("request_id")
        await send({"type": "websocket.accept",
                    "headers": [(b"x-request-id", rid.encode())] if rid else []})
        conn = WebSocketConnection(node, send, session, lease, node.security.client_ip(scope))
        node.register(conn)
        conn.writer = asyncio.get_running_loop().create_task(conn.write_loop())
        try:
            conn.reader = asyncio.current_task()
            try:
                await self._read_loop(conn, receive)
            except asyncio.CancelledError:
                if conn._closing is None and not conn.outbox.closed:
                    raise
                # stopped by the writer: the peer took no close frame in time
                if conn.reader is not None:
                    conn.reader.uncancel()
            finally:
                conn.reader = None
        finally:
            await conn.cleanup()
            if conn.writer is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(conn.writer, 5)

    async def _read_loop(self, conn: WebSocketConnection, receive: Receive) -> None:
        max_frame = self.node.settings.limits.max_frame_bytes
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                conn.peer_close = message.get("code")
                conn.outbox.close()
                return
            if kind != "websocket.receive":
                continue
            text = message.get("text")
            if text is None:
                conn.disconnect(disconnect(CloseCode.UNSUPPORTED_DATA))
                return
            if len(text) > max_frame:
                conn.disconnect(disconnect(CloseCode.MESSAGE_TOO_BIG,
                                           f"frame over {max_frame} bytes"))
                return
            try:
                await conn.handle(text)
            except Exception:  # a bug, not the client's: 1011, as on the fast engine
                log.exception("a WebSocket command failed")
                conn.disconnect(disconnect(CloseCode.INTERNAL_ERROR))
                return
            if conn._closing is not None:
                return


async def _close(send: Send, reason: Disconnect) -> None:
    await send({"type": "websocket.close", "code": int(reason.code), "reason": reason.reason})
