"""uvicorn's HTTP protocol with a request deadline against slowloris clients.

uvicorn drops idle keep-alive connections, but not a connection that never sends a request or
sends its head a byte at a time. Here every request must arrive whole (head and body, or the
head of an upgrade) within ``timeout_keep_alive`` seconds of the connection opening or of the
request's first byte, else the connection is closed. ``tidings serve`` sets that timeout from
``limits.handshake_timeout``.

And uvicorn's sans-I/O WebSocket protocol, with one correction to the ``websockets`` state
machine underneath: a Close frame in the middle of a fragmented message ends the connection with
the normal closing handshake (RFC 6455 5.4: control frames may be injected between fragments)
instead of failing it with 1002 (Autobahn case 7.1.5); and a bound on a message's frames
(``limits.max_message_frames``, 1009 past it): ``websockets`` bounds a message's bytes, not its
frames, and a stream of empty continuation frames costs a parse and a list entry each. Its wait
for the client's answer to a close frame is the close-handshake timeout of every engine
(:func:`tidings.machines.backlog.close_timeout`), and a connection whose app has ended is cut
(reset) if the client has not taken everything within it.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.exceptions import PayloadTooBig
from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol

from tidings.core.wire.frames import too_many_frames
from tidings.engines.sockets.transport import cut
from tidings.machines.backlog import close_timeout
from tidings.server.errors import raw_error_response

__all__ = ["GuardedHttpToolsProtocol", "TidingsWebSocketProtocol", "protocol_path", "ws_protocol_path"]


class _HeadTooLarge(Exception):
    """Raised from a parser callback; httptools stops and raises its callback error."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    _deadline: asyncio.TimerHandle | None = None
    # The head limit (limits.max_header_bytes): httptools has none, and keeps a header's bytes
    # until its end, so an endless header would grow without bound. Counted twice: the URL and
    # headers as parsed (exact, for a head that ends), and the bytes of reads that held nothing
    # but an unfinished head (for one that does not end: memory stays under the limit plus one
    # read). Over it: 431, JSON body, connection closed.
    _max_head = 65536
    _head_size = 0  # URL and header bytes of the current head
    _head_bytes = 0  # bytes of reads that held only the current, unfinished head
    _heads = 0  # heads completed on this connection
    _in_body = False

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        node = getattr(config.app, "node", None)
        if node is not None:
            self._max_head = node.settings.limits.max_header_bytes

    def data_received(self, data: bytes) -> None:
        heads, in_body = self._heads, self._in_body
        super().data_received(data)
        if self._heads == heads and not in_body and not self._in_body:
            self._head_bytes += len(data)
            if self._head_bytes > self._max_head and not self.transport.is_closing():
                self._refuse_head()
        else:
            self._head_bytes = 0

    def _refuse_head(self) -> None:
        self.transport.write(raw_error_response(431, f"request head over {self._max_head} bytes"))
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        # the JSON error body every refusal of tidings has (uvicorn's is plain text); httptools
        # reports the exception _grow raises as a parser error
        if self._head_size > self._max_head:
            self._refuse_head()
            return
        self.transport.write(raw_error_response(400, "invalid HTTP request"))
        self.transport.close()

    def on_url(self, url: bytes) -> None:
        self._grow(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._grow(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _grow(self, n: int) -> None:
        self._head_size += n
        if self._head_size > self._max_head:
            raise _HeadTooLarge

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_size = 0
        self._arm()

    def on_headers_complete(self) -> None:
        self._heads += 1
        self._in_body = True
        super().on_headers_complete()
        if self.parser.should_upgrade():
            self._disarm()  # the WebSocket protocol takes the connection from here

    def on_message_complete(self) -> None:
        self._in_body = False
        self._disarm()
        super().on_message_complete()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.timeout_keep_alive, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def protocol_path() -> str:
    return f"{__name__}:{GuardedHttpToolsProtocol.__name__}"




class _TooManyFrames(PayloadTooBig):
    """A message in more frames than allowed: ``websockets`` closes with 1009 and this reason."""

    def __init__(self, reason: str) -> None:
        Exception.__init__(self, reason)
        self.reason = reason

    def set_current_size(self, current_size: int | None) -> None:
        return None

    def __str__(self) -> str:
        return self.reason


class _ServerProtocol(ServerProtocol):
    max_frames: int | None = None
    frames = 0  # frames of the fragmented message in progress

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.CLOSE:
            # The unfinished message is dropped; the close is answered as any other close.
            self.current_size = None
        elif frame.opcode is Opcode.CONT:
            self.frames += 1
            if self.max_frames is not None and self.frames > self.max_frames:
                raise _TooManyFrames(too_many_frames(self.max_frames).reason)
        elif not frame.fin and frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            self.frames = 1
        super().recv_frame(frame)


class TidingsWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol on :class:`_ServerProtocol` (see the docstring),
    with a message's frames bounded by ``limits.max_message_frames``."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.conn.__class__ = _ServerProtocol  # same state, one method corrected
        node = getattr(config.app, "node", None)
        if node is not None:
            limits = node.settings.limits
            cast(_ServerProtocol, self.conn).max_frames = limits.max_message_frames
            # the wait for the client's answer to our close frame: the one close-handshake
            # timeout of every engine (uvicorn's own is 10 s)
            self.close_timeout = close_timeout(limits.idle_timeout)

    async def run_asgi(self) -> None:
        await super().run_asgi()
        # The app is done. uvicorn then closes the transport, which first writes what it holds:
        # a client that reads nothing would hold the connection for ever. It gets the close
        # timeout, then is cut.
        if self.handshake_complete:
            self.loop.call_later(self.close_timeout, cut, self.transport)


    def handle_handshake_exception(self) -> None:
        # websockets could not read the upgrade request: its own answer (414 or 431 past its
        # line and header limits, else none) becomes a JSON error like every other refusal
        output = b"".join(self.conn.data_to_send())
        status = int(output[9:12]) if output[9:12].isdigit() else 400
        self.handshake_complete = True
        self.close_sent = True
        exc = self.conn.handshake_exc
        reason = exc.__cause__ or exc if exc is not None else "invalid request"
        self.transport.write(raw_error_response(status, f"invalid WebSocket handshake: {reason}"))
        self.transport.close()


def ws_protocol_path() -> str:
    return f"{__name__}:{TidingsWebSocketProtocol.__name__}"
