"""The fast server's HTTP answers (``/sse``, ``/stream``, ``/poll``, ``POST /api/publish``) over
raw sockets: split and pipelined requests, keep-alive, and what it leaves to the ASGI app."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import orjson
import pytest

from tests.serving import RunningServer, serve

DEADLINE = 10.0
API_KEY = "fast-http-test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def fast() -> Iterator[RunningServer]:
    with serve(
        engine="fast", api_key=API_KEY, limits={"max_request_bytes": 2048}, sse={"max_duration": 1.0}
    ) as running:
        yield running


class Conn:
    """One raw HTTP/1.1 connection that reads answers by Content-Length."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def answer(self) -> tuple[int, dict[str, str], bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), DEADLINE)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        body = await asyncio.wait_for(
            self.reader.readexactly(int(headers.get("content-length", "0"))), DEADLINE
        )
        return status, headers, body

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def publish_request(channel: str, data: object, *, key: str = API_KEY) -> bytes:
    body = orjson.dumps({"channel": channel, "data": data})
    return (
        f"POST /api/publish HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def poll_request(channel: str, cursor: str = "") -> bytes:
    query = f"channel={channel}&timeout=0" + (f"&cursor={cursor}" if cursor else "")
    return f"GET /poll?{query} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


async def test_a_connection_moves_between_fast_answers_and_the_asgi_app(fast: RunningServer) -> None:
    conn = await Conn.open(fast.port)
    try:
        conn.writer.write(publish_request("mixed", "a"))
        assert (await conn.answer())[0] == 200
        conn.writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")  # the ASGI app's
        assert (await conn.answer())[0] == 200
        conn.writer.write(publish_request("mixed", "b"))  # taken by the ASGI app from now on
        status, _, body = await conn.answer()
    finally:
        await conn.close()
    assert status == 200 and orjson.loads(body)["offset"] == 2
