"""A loopback HTTP proxy that can block request paths, as a hostile middlebox would.

Each connection's request line is read; a path starting with a blocked prefix is answered 403
and closed, anything else is piped to the upstream with ``Connection: close`` (so a browser
cannot slip a later request past the check on a kept-alive connection). ``block()`` also cuts the connections
already open on that prefix. It serves one extra page itself at ``/page.html``.
"""

from __future__ import annotations

import asyncio
import contextlib


class BlockingProxy:
    def __init__(self, upstream_port: int, page: bytes) -> None:
        self.upstream_port = upstream_port
        self.page = page
        self.blocked: set[str] = set()
        self.open: dict[asyncio.StreamWriter, str] = {}
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> BlockingProxy:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        for writer in list(self.open):
            writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def block(self, prefix: str) -> None:
        self.blocked.add(prefix)
        for writer, path in list(self.open.items()):
            if path.startswith(prefix):
                writer.transport.abort()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            writer.close()
            return
        path = head.split(b" ", 2)[1].decode("latin-1")
        if path.startswith("/page.html"):
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n" % len(self.page) + self.page
            )
            await writer.drain()
            writer.close()
            return
        if any(path.startswith(prefix) for prefix in self.blocked):
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        if b"upgrade" not in head.lower():
            # One request per connection, so that every request line passes the check above.
            lines = [h for h in head[:-4].split(b"\r\n") if not h.lower().startswith(b"connection:")]
            head = b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n"
        up_writer.write(head)
        self.open[writer] = path
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self.open.pop(writer, None)
            for w in (writer, up_writer):
                w.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            writer.write_eof()
