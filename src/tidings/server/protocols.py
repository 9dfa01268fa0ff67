"""uvicorn's HTTP protocol with a request deadline against slowloris clients.

uvicorn drops idle keep-alive connections, but not a connection that never sends a request or
sends its head a byte at a time. Here every request must arrive whole (head and body, or the
head of an upgrade) within ``timeout_keep_alive`` seconds of the connection opening or of the
request's first byte, else the connection is closed. ``tidings serve`` sets that timeout from
``limits.handshake_timeout``.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["GuardedHttpToolsProtocol"]


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


