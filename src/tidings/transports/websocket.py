"""The WebSocket transport (``GET /ws``): the command handler every WebSocket path shares, and
its ASGI adapter.

:class:`CommandHandler` holds one client's :class:`~tidings.core.session.Session` and carries out
its commands against the node; it needs only "queue this text frame", "deliver this publication"
and "close with this reason" from its transport. :func:`open_session` is the one admission check.
Two transports subclass the handler: :class:`WebSocketConnection` here (ASGI; an
:class:`~tidings.outbox.Outbox` and one writer task, so a ``subscribed`` reply always precedes the
recovered and live messages) and the standalone server's connection in
:mod:`tidings.server.fast.protocol`, which writes pre-encoded frames straight to its socket.
Frames from the client are handled one at a time, in order.

Bad input: a binary frame closes with 1003, invalid JSON with 1007, a frame over the size limit
with 1009; a valid JSON frame that is not a valid command gets an ``error`` reply and the
connection stays open. A full outbox closes with 4008 (slow consumer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from tidings.core.commands import (
    CommandError,
    Connect,
    HistoryCmd,
    Ping,
    PresenceCmd,
    PublishCmd,
    Subscribe,
    Unsubscribe,
    parse_command,
)
from tidings.core.disconnect import CloseCode, Disconnect, disconnect
from tidings.core.events import Publication
from tidings.core.recovery import Recovered
from tidings.core.session import Session
from tidings.core.wire.frames import EncodedPublication, reply
from tidings.exceptions import TidingsError, TokenExpired, Unauthorized
from tidings.node import Node
from tidings.outbox import Outbox
from tidings.presence.base import ClientInfo
from tidings.server.security import bearer_token, credentials_from_token

__all__ = ["CommandHandler", "Refused", "WebSocketConnection", "WebSocketEndpoint", "open_session"]

log = logging.getLogger("tidings.ws")

Scope = dict[str, Any]
Receive = Any
Send = Any


def _query_param(query_string: bytes | str, name: str) -> str | None:
    from urllib.parse import parse_qs

    if isinstance(query_string, bytes):
        query_string = query_string.decode("latin-1")
    values = parse_qs(query_string).get(name)
    return values[0] if values else None


class Refused(Exception):
    """The upgrade is refused: close with ``reason``, after accepting it if ``accept``."""

    def __init__(self, reason: Disconnect, accept: bool) -> None:
        super().__init__(reason.reason)
        self.reason = reason
        self.accept = accept


def open_session(node: Node, headers: Mapping[str, str], query_string: bytes | str) -> Session:
    """The session of a new WebSocket (``headers`` keyed lower case), or :class:`Refused`.

    Every WebSocket transport asks this before it accepts, so they admit clients alike: a
    draining node refuses without accepting; a bad or expired token is told with a close code.
    """
    if node.draining:
        raise Refused(disconnect(CloseCode.SERVICE_RESTART), accept=False)
    try:
        token = bearer_token(headers) or _query_param(query_string, "token")
        credentials = credentials_from_token(node.settings, token) if token else None
    except TidingsError as exc:
        code = CloseCode.TOKEN_EXPIRED if isinstance(exc, TokenExpired) else \
            CloseCode.UNAUTHORIZED
        raise Refused(disconnect(code, exc.message), accept=True) from None
    return Session(node.namespaces, node.settings.limits.max_subscriptions_per_connection,
                   credentials)


class CommandHandler:
    """One WebSocket client's commands, for every WebSocket transport (ASGI and the fast server).

    A transport subclasses it and supplies three synchronous calls: :meth:`queue` (send this text
    frame after everything queued before it), :meth:`deliver` (the same for a publication, as
    the hub calls it) and :meth:`disconnect` (close with this reason). It feeds each text frame
    to :meth:`handle`, one at a time and in order, and calls :meth:`release` once when the
    connection is gone. Replies are queued in the order the commands arrived.

    Its slots (``client_id``, ``node``, ``session``) are declared by each subclass, so that a
    subclass may also derive from another slotted class (an ``asyncio.Protocol`` base).
    """

    __slots__ = ()
    client_id: str
    node: Node
    session: Session

    transport = "ws"

    def __init__(self, node: Node, session: Session) -> None:
        # The slots are the subclass's (see the class docstring), which mypy cannot see here.
        self.node = node  # type: ignore[misc]
        self.session = session  # type: ignore[misc]
        self.client_id = uuid.uuid4().hex  # type: ignore[misc]

    @property
    def user(self) -> str:
        return self.session.credentials.user

    # what the transport supplies ---------------------------------------------------------------

    def queue(self, frame: str) -> None:
        raise NotImplementedError

    def deliver(self, publication: EncodedPublication) -> None:
        raise NotImplementedError

    def disconnect(self, reason: Disconnect) -> None:
        raise NotImplementedError

    def control(self, channel: str, message: dict[str, Any]) -> None:
        self.queue(orjson.dumps(message).decode())

    # commands --------------------------------------------------------------------------------

    def error(self, ref: int | None, exc: TidingsError) -> None:
        self.queue(reply("error", ref, code=exc.code, message=exc.message))

    async def handle(self, text: str) -> None:
        node = self.node
        try:
            command = parse_command(text, node.settings.limits.history_limit)
            command = self.session.receive(command, time.time(), len(text))
            await self._execute(command)
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
                result = await node.publish(command.channel, command.data, event=command.event,
                                            idempotency_key=command.idempotency_key)
                pub = result.publication
                self.queue(reply("published", ref, channel=pub.channel, offset=pub.offset,
                                 epoch=pub.epoch, id=pub.id))
            elif isinstance(command, Subscribe):
                await self._subscribe(command)
            elif isinstance(command, Unsubscribe):
                await self._leave(command.channel)
                await node.unsubscribe(self, command.channel)
                self.queue(reply("unsubscribed", ref, channel=command.channel))
            elif isinstance(command, Ping):
                self.queue(reply("pong", ref))
            elif isinstance(command, HistoryCmd):
                pubs, position, gap = await node.history(command.channel, command.since,
                                                         command.limit)
                extra: dict[str, Any] = {"gap": gap.to_dict()} if gap is not None else {}
                self.queue(reply("history", ref, channel=command.channel,
                                 epoch=position.epoch, offset=position.offset,
                                 publications=[p.to_dict() for p in pubs], **extra))
            elif isinstance(command, PresenceCmd):
                clients = await node.presence_of(command.channel)
                self.queue(reply("presence", ref, channel=command.channel,
                                 clients=[c.to_dict() for c in clients]))
            elif isinstance(command, Connect):
                self._connect(command)
        except TidingsError as exc:
            self.error(ref, exc)

    def _connect(self, command: Connect) -> None:
        if command.token is None:
            if self.session.credentials.anonymous:
                self.session.connect(self.session.credentials, time.time())
            else:
                raise Unauthorized("connect needs a token on an authenticated connection")
        else:
            credentials = credentials_from_token(self.node.settings, command.token)
            self.session.connect(credentials, time.time())
        creds = self.session.credentials
        self.queue(reply("connected", command.ref, client=self.client_id, user=creds.user,
                         expires=creds.expires_at))

    async def _subscribe(self, command: Subscribe) -> None:
        channel = command.channel
        recovery = self.session.recovery(channel)

        def ready(result: Recovered) -> None:
            fields: dict[str, Any] = {"channel": channel, "epoch": result.position.epoch,
                                      "offset": result.position.offset,
                                      "recovered": result.recovered}
            if result.gap is not None:
                fields["requested"] = result.gap.requested
                fields["available_from"] = result.gap.available_from
            self.queue(reply("subscribed", command.ref, **fields))
            for pub in result.publications:
                self.deliver(EncodedPublication(pub))

        try:
            await self.node.subscribe(self, channel, command.since, ready, recovery)
        except BaseException:
            self.session.unsubscribe(channel)
            raise
        self.session.subscribed(channel)
        if self.node.options(channel).presence:
            await self.node.join(channel, self._client_info())

    def _client_info(self) -> ClientInfo:
        creds = self.session.credentials
        return ClientInfo(self.client_id, creds.user, creds.info)

    async def _leave(self, channel: str) -> None:
        if self.node.options(channel).presence:
            await self.node.leave(channel, self._client_info())

    async def release(self) -> None:
        """Leave every channel and forget the connection (the transport has stopped)."""
        for channel in list(self.session.subscriptions):
            with contextlib.suppress(Exception):
                await self._leave(channel)
            await self.node.unsubscribe(self, channel)
        self.session.close()
        self.node.unregister(self)


class WebSocketConnection(CommandHandler):
    """One client's WebSocket over ASGI: its frames go through an Outbox and a writer task."""

    __slots__ = ("_closing", "client_id", "node", "outbox", "send", "session", "writer")

    def __init__(self, node: Node, send: Send, session: Session) -> None:
        super().__init__(node, session)
        self.send = send
        limits = node.settings.limits
        self.outbox: Outbox[str] = Outbox(limits.outbox_bytes, limits.outbox_messages,
                                          self._overflow)
        self._closing: Disconnect | None = None
        self.writer: asyncio.Task[None] | None = None

    def deliver(self, publication: EncodedPublication) -> None:
        self.outbox.push(publication.ws_text)

    def queue(self, frame: str) -> None:
        self.outbox.push(frame)

    def disconnect(self, reason: Disconnect) -> None:
        if self._closing is None:
            self._closing = reason
        self.outbox.close()

    def _overflow(self) -> None:
        self._closing = self._closing or disconnect(CloseCode.SLOW_CONSUMER)

    async def write_loop(self) -> None:
        send = self.send
        outbox = self.outbox
        try:
            while True:
                batch = await outbox.wait_batch()
                if not batch:
                    break
                for frame in batch:
                    if outbox.closed:  # overflowed or disconnected: what is left is dropped
                        break
                    await send({"type": "websocket.send", "text": frame})
        except Exception:  # the peer went away mid-write; the reader notices the disconnect
            return
        reason = self._closing or disconnect(CloseCode.NORMAL)
        with contextlib.suppress(Exception):
            await send({"type": "websocket.close", "code": int(reason.code),
                        "reason": reason.reason})

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
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        try:
            session = open_session(node, headers, scope.get("query_string", b""))
        except Refused as refused:
            if refused.accept:
                await send({"type": "websocket.accept"})
                await send({"type": "websocket.close", "code": int(refused.reason.code),
                            "reason": refused.reason.reason})
            else:
                await send({"type": "websocket.close", "code": int(refused.reason.code)})
            return
        await send({"type": "websocket.accept"})
        conn = WebSocketConnection(node, send, session)
        node.register(conn)
        conn.writer = asyncio.get_running_loop().create_task(conn.write_loop())
        try:
            await self._read_loop(conn, receive)
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
            await conn.handle(text)
            if conn._closing is not None:
                return


def publication_frame(publication: Publication) -> str:
    """The ``message`` frame of one publication (outside fan-out, e.g. for tests)."""
    return EncodedPublication(publication).ws_text
