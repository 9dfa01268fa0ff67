"""A thin test client over the ``websockets`` library: JSON commands, replies by ref, deadlines."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

DEADLINE = 10.0


class WS:
    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self._refs = itertools.count(1)

    @classmethod
    async def open(cls, url: str, **kwargs: Any) -> WS:
        return cls(await connect(url, open_timeout=DEADLINE, **kwargs))

    async def close(self) -> None:
        await self.conn.close()

    async def send(self, op: str, **fields: Any) -> int:
        ref = next(self._refs)
        await self.conn.send(orjson.dumps({"op": op, "ref": ref, **fields}).decode())
        return ref

    async def recv(self, timeout: float = DEADLINE) -> dict[str, Any]:
        frame = await asyncio.wait_for(self.conn.recv(), timeout)
        value: dict[str, Any] = orjson.loads(frame)
        return value

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send a command and return its reply (frames before it are kept in ``skipped``)."""
        ref = await self.send(op, **fields)
        while True:
            msg = await self.recv()
            if msg.get("ref") == ref:
                return msg

    async def messages(self, n: int, timeout: float = DEADLINE) -> list[dict[str, Any]]:
        """The next ``n`` ``message`` frames (other frames are skipped)."""
        out: list[dict[str, Any]] = []
        while len(out) < n:
            msg = await self.recv(timeout)
            if msg["op"] == "message":
                out.append(msg)
        return out

    async def __aenter__(self) -> WS:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
