"""``/ws`` on the ASGI engine: the driver of
:class:`~tidings.machines.websocket.WebSocketMachine` over ASGI messages.

The endpoint reads the server's messages into the machine and carries out the client's commands
in turn; one writer task per connection sends what the machine holds, then its close. One timer
per connection (the machine's deadline). The server below (uvicorn) parses frames, answers
pings, sends its own keepalive pings and times out a silent client, from the same settings
(``limits.ping_interval``, ``limits.idle_timeout``): that part of the rules is the server's
here (docs/topics/engines.md). Every other rule is the machine's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from tidings.auth.limits import ConnectionLease
from tidings.core.session import Session
from tidings.core.wire.errors import error_body
from tidings.core.wire.frames import EncodedPublication
from tidings.core.wire.websocket import BinaryMessage, TextMessage
from tidings.engines.timer import Timer
from tidings.hub import LatencyObserver
from tidings.machines.websocket import ABORTED, WebSocketMachine
from tidings.node import Node
from tidings.proxy import Caller
from tidings.transports.http_common import Receive, Scope, Send
from tidings.transports.websocket import (
    HANDLER_SLOTS,
    CommandHandler,
    Refused,
    admit,
    websocket_config,
)

__all__ = ["WebSocketConnection", "WebSocketEndpoint"]


class WebSocketConnection(CommandHandler):
    """One client's WebSocket over ASGI: its machine, a writer task and a timer."""

    __slots__ = ("_probe", "_timer", "_waiter", "machine", "reader", "send", "writer", *HANDLER_SLOTS)

    def __init__(
        self,
        node: Node,
        send: Send,
        session: Session,
        lease: ConnectionLease | None = None,
        address: str | None = None,
        caller: Caller | None = None,
    ) -> None:
        self.send = send
        loop = asyncio.get_running_loop()
        self.machine: WebSocketMachine[str] = WebSocketMachine(
            websocket_config(node.settings, server_pings=True), loop.time(), session=session
        )
        self.writer: asyncio.Task[None] | None = None
        self.reader: asyncio.Task[Any] | None = None  # set while the endpoint reads frames
        self._waiter: asyncio.Future[None] | None = None
        self._timer = Timer(loop, self._tick)
        self._probe: tuple[int, LatencyObserver] | None = None
        super().__init__(node, session, lease, address, caller)

    # Subscriber ------------------------------------------------------------------------------

    def deliver(self, publication: EncodedPublication) -> None:
        if self.deltas is not None:
            publication = self.deltas.outgoing(publication)
        if self.machine.push(publication.ws_text):
            self.act()

    def replay(self, publication: EncodedPublication) -> None:
        if self.machine.replay(publication.ws_text):
            self.act()

    def queue(self, frame: str) -> None:
        if self.machine.push(frame):
            self.act()

    def mark_latency(self, time_ms: int, observe: LatencyObserver) -> None:
        """Observe publish → write for the publication just queued (the hub samples)."""
        self._probe = (time_ms, observe)

    # the machine's orders --------------------------------------------------------------------

    def act(self) -> None:
        machine = self.machine
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if machine.take_overflow():
            self.node.metrics.outbox_overflow(self.transport)
        if machine.state == ABORTED:  # the client took nothing in time: stop reading, writing
            for task in (self.writer, self.reader):
                if task is not None and not task.done():
                    task.cancel()
        self._timer.at(machine.deadline)

    def _tick(self) -> None:
        ended = self.machine.tick(asyncio.get_running_loop().time(), time.time())
        if ended:
            self.grants_ended(ended)
        self.act()

    async def write_loop(self) -> None:
        """Send what the machine holds, in order, then its close frame."""
        machine = self.machine
        send = self.send
        loop = asyncio.get_running_loop()
        try:
            while True:
                frames = machine.take()
                if frames:
                    probe, self._probe = self._probe, None
                    for frame in frames:
                        await send({"type": "websocket.send", "text": frame})
                    if probe is not None:
                        probe[1](probe[0])
                    continue
                farewell = machine.take_farewell()
                if farewell is not None:
                    code, reason = farewell
                    await send({"type": "websocket.close", "code": code, "reason": reason})
                    return
                if machine.state:
                    return
                self._waiter = loop.create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
        except Exception:  # the peer went away mid-write; the reader notices the disconnect
            return

    async def read_loop(self, receive: Receive) -> None:
        machine = self.machine
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                machine.gone(message.get("code"))
                self.act()
                return
            if kind != "websocket.receive":
                continue
            text = message.get("text")
            machine.receive(
                TextMessage(text) if text is not None else BinaryMessage(message.get("bytes") or b"")
            )
            if machine.start_commands():
                await self.run_commands()
            else:
                self.act()

    async def cleanup(self) -> None:
        self.machine.gone()
        self._timer.at(None)
        writer = self.writer
        if writer is not None and not writer.done():
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
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
            session, lease, caller = await admit(node, scope)
        except Refused as refused:
            reason = refused.reason
            if refused.accept:
                await send({"type": "websocket.accept"})
                await send({"type": "websocket.close", "code": int(reason.code), "reason": reason.reason})
            elif "websocket.http.response" in scope.get("extensions", {}):
                # the ASGI extension for answering an upgrade with an HTTP response: the JSON
                # error of every refusal
                body = error_body("forbidden", reason.reason)
                await send(
                    {
                        "type": "websocket.http.response.start",
                        "status": 403,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", b"%d" % len(body)),
                        ],
                    }
                )
                await send({"type": "websocket.http.response.body", "body": body})
            else:  # a server without it answers a close before accept with a bare 403
                await send({"type": "websocket.close", "code": int(reason.code)})
            return
        rid = scope.get("state", {}).get("request_id")
        await send({"type": "websocket.accept", "headers": [(b"x-request-id", rid.encode())] if rid else []})
        conn = WebSocketConnection(node, send, session, lease, node.security.client_ip(scope), caller)
        node.register(conn)
        conn.writer = asyncio.get_running_loop().create_task(conn.write_loop())
        conn.reader = reader = asyncio.current_task()
        try:
            await conn.read_loop(receive)
        except asyncio.CancelledError:
            if conn.machine.state != ABORTED or reader is None:
                raise
            reader.uncancel()  # stopped by the machine: the peer took nothing in time
        finally:
            conn.reader = None
            await conn.cleanup()
