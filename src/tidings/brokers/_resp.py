"""A minimal RESP2 connection for the Redis broker's Pub/Sub readers.

Why not redis-py's connection here: closing a broker must stop its reader task for sure, and on
Python 3.11 a cancellation that arrives as a connect completes can be swallowed inside
``asyncio.wait_for`` (used on redis-py's connect path), leaving the reader blocked on a fresh
socket for good. Here ``close()`` marks the connection closed, so an ``open`` that completes after
it closes its socket at once, and a read ends when the socket does. A Pub/Sub link needs little:
open (TLS and AUTH optional), write commands, read replies. Commands on the data path still go
through redis-py.

Every failure surfaces as :class:`ConnectionError` (an ``OSError``) or, for an error reply,
:class:`RespError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["RespAddress", "RespConnection", "RespError"]


class RespError(Exception):
    """An error reply from Redis (``-ERR ...``, ``-MOVED ...``)."""


@dataclass(frozen=True, slots=True)
class RespAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def from_url(cls, url: str) -> RespAddress:
        """``redis://[user:password@]host[:port][/db]`` or ``rediss://…`` (db is irrelevant)."""
        parts = urlsplit(url)
        return cls(
            parts.hostname or "127.0.0.1",
            parts.port or 6379,
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
            parts.scheme == "rediss",
        )


def encode_command(*args: bytes | str | int) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class RespConnection:
    """One TCP (or TLS) connection speaking RESP2. Only one task may read from it."""

    def __init__(self, address: RespAddress, connect_timeout: float = 2.0) -> None:
        self.address = address
        self.connect_timeout = connect_timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._closed = False

    async def open(self) -> None:
        """Connect and authenticate; ConnectionError if Redis cannot be reached."""
        address = self.address
        context = ssl.create_default_context() if address.tls else None
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(address.host, address.port, ssl=context)
        except OSError as exc:  # TimeoutError included
            raise ConnectionError(f"cannot connect to {address.host}:{address.port}: {exc}") from exc
        if self._closed:  # closed while connecting: do not leave a live socket behind
            writer.close()
            raise ConnectionError("connection is closed")
        self._reader, self._writer = reader, writer
        if address.password is not None:
            auth = ([address.username] if address.username else []) + [address.password]
            await self.send("AUTH", *auth)
            async with asyncio.timeout(self.connect_timeout):
                await self.read()

    async def send(self, *args: bytes | str | int) -> None:
        writer = self._writer
        if writer is None or writer.is_closing():
            raise ConnectionError("connection is closed")
        writer.write(encode_command(*args))
        await writer.drain()

    async def read(self) -> Any:
        """The next reply: bytes, int, None, list, or raise RespError for an error reply."""
        reader = self._reader
        if reader is None:
            raise ConnectionError("connection is closed")
        try:
            return await self._read_value(reader)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise ConnectionError("connection closed by Redis") from exc

    async def _read_value(self, reader: asyncio.StreamReader) -> Any:
        line = await reader.readuntil(b"\r\n")
        kind, rest = line[:1], line[1:-2]
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            return (await reader.readexactly(size + 2))[:-2]
        if kind == b"*":
            count = int(rest)
            if count < 0:
                return None
            return [await self._read_value(reader) for _ in range(count)]
        if kind == b":":
            return int(rest)
        if kind == b"+":
            return rest
        if kind == b"-":
            raise RespError(rest.decode(errors="replace"))
        raise ConnectionError(f"unexpected RESP reply {line[:20]!r}")

    def close(self) -> None:
        """Close now (also an ``open`` still in progress); pending reads end with an error."""
        self._closed = True
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()
