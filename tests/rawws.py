"""A WebSocket client over a raw socket (for frames no library client sends), for tests of both
engines."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os

import orjson

from tests.rfc6455 import client_frame
from tidings.core.wire.websocket import OP_CLOSE, OP_PING, OP_TEXT, accept_key

DEADLINE = 10.0


class RawWS:
    """A WebSocket opened over a raw socket, for frames no library client sends."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes = b"") -> None:
        self.reader = reader
        self.writer = writer
        self.head = head  # the server's 101 response
        self.rsv1 = False  # of the last frame read (permessage-deflate: compressed)

    @property
    def extensions(self) -> str | None:
        """The answer's ``Sec-WebSocket-Extensions``, if any."""
        for line in self.head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "sec-websocket-extensions":
                return value.strip()
        return None

    @classmethod
    async def open(cls, port: int, path: str = "/ws", extensions: str | None = None) -> RawWS:
        """Open a WebSocket; ``extensions``: the ``Sec-WebSocket-Extensions`` to offer."""
        offer = "" if extensions is None else f"Sec-WebSocket-Extensions: {extensions}\r\n"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{offer}\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
        assert head.startswith(b"HTTP/1.1 101 ")
        assert f"Sec-WebSocket-Accept: {accept_key(key)}".encode() in head
        return cls(reader, writer, head)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def frame(self) -> tuple[int, bytes]:
        head = await asyncio.wait_for(self.reader.readexactly(2), DEADLINE)
        assert head[1] & 0x80 == 0, "server frames are never masked"
        self.rsv1 = bool(head[0] & 0x40)
        n = head[1] & 0x7F
        if n == 126:
            n = int.from_bytes(await self.reader.readexactly(2), "big")
        elif n == 127:
            n = int.from_bytes(await self.reader.readexactly(8), "big")
        return head[0] & 0x0F, await self.reader.readexactly(n)

    async def data_frame(self) -> tuple[int, bytes]:
        """The next frame that is not a ping."""
        while True:
            opcode, payload = await self.frame()
            if opcode != OP_PING:
                return opcode, payload

    async def json(self) -> dict[str, object]:
        while True:
            opcode, payload = await self.frame()
            if opcode == OP_TEXT:
                value: dict[str, object] = orjson.loads(payload)
                return value

    async def close_code(self) -> int:
        """Read until the server's close frame; its code. The server then closes the socket."""
        while True:
            opcode, payload = await self.frame()
            if opcode == OP_CLOSE:
                with contextlib.suppress(ConnectionError):
                    self.send(client_frame(OP_CLOSE, payload[:2]))  # as a client answers
                    # then the server closes the socket (a reset if it had closed already)
                    assert await asyncio.wait_for(self.reader.read(), DEADLINE) == b""
                self.close()
                return int.from_bytes(payload[:2], "big")

    def close(self) -> None:
        self.writer.close()
