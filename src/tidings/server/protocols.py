"""uvicorn's HTTP protocol with a request deadline against slowloris clients.

uvicorn drops idle keep-alive connections, but not a connection that never sends a request or
sends its head a byte at a time. Here every request must arrive whole (head and body, or the
head of an upgrade) within ``timeout_keep_alive`` seconds of the connection opening or of the
request's first byte, else the connection is closed. ``tidings serve`` sets that timeout from
``limits.handshake_timeout``.

And uvicorn's sans-I/O WebSocket protocol, with one correction to the ``websockets`` state
machine underneath: a Close frame in the middle of a fragmented message ends the connection with
the normal closing handshake (RFC 6455 5.4: control frames may be injected between fragments)
instead of failing it with 1002 (Autobahn case 7.1.5).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame, Opcode
from websockets.server import ServerProtocol

__all__ = ["GuardedHttpToolsProtocol", "TidingsWebSocketProtocol", "protocol_path", "ws_protocol_path"]


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.parser.should_upgrade():
            self._disarm()  # the WebSocket protocol takes the connection from here

    def on_message_complete(self) -> None:
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




class _ServerProtocol(ServerProtocol):
    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.CLOSE:
            # The unfinished message is dropped; the close is answered as any other close.
            self.current_size = None
        super().recv_frame(frame)


class TidingsWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol on :class:`_ServerProtocol` (see the docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn.__class__ = _ServerProtocol  # same state, one method corrected


def ws_protocol_path() -> str:
    return f"{__name__}:{TidingsWebSocketProtocol.__name__}"
