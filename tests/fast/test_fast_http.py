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
    with serve(engine="fast", api_key=API_KEY, limits={"max_request_bytes": 2048},
               sse={"max_duration": 1.0}) as running:
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
            self.reader.readexactly(int(headers.get("content-length", "0"))), DEADLINE)
        return status, headers, body

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def publish_request(channel: str, data: object, *, key: str = API_KEY) -> bytes:
    body = orjson.dumps({"channel": channel, "data": data})
    return (f"POST /api/publish HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body


def poll_request(channel: str, cursor: str = "") -> bytes:
    query = f"channel={channel}&timeout=0" + (f"&cursor={cursor}" if cursor else "")
    return f"GET /poll?{query} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


async def test_pipelined_publishes_and_polls_are_answered_in_order_on_one_connection(
        fast: RunningServer) -> None:
    conn = await Conn.open(fast.port)
    try:
        conn.writer.write(poll_request("pipe"))
        status, _, body = await conn.answer()
        cursor = orjson.loads(body)["cursor"]
        # three publishes and a poll in one write: every answer comes back, in order
        conn.writer.write(publish_request("pipe", 1) + publish_request("pipe", 2)
                          + publish_request("pipe", 3) + poll_request("pipe", cursor))
        offsets = [orjson.loads((await conn.answer())[2])["offset"] for _ in range(3)]
        status, headers, body = await conn.answer()
    finally:
        await conn.close()
    assert offsets == [1, 2, 3]
    assert status == 200 and headers["content-type"] == "application/json"
    assert [m["data"] for m in orjson.loads(body)["messages"]] == [1, 2, 3]


async def test_a_publish_whose_body_arrives_in_pieces_is_published_once(
        fast: RunningServer) -> None:
    conn = await Conn.open(fast.port)
    raw = publish_request("pieces", {"text": "x" * 500})
    try:
        for i in range(0, len(raw), 97):
            conn.writer.write(raw[i:i + 97])
            await conn.writer.drain()
            await asyncio.sleep(0.005)
        status, headers, body = await conn.answer()
        conn.writer.write(poll_request("pieces", ""))
        _, _, position = await conn.answer()
    finally:
        await conn.close()
    assert status == 200 and len(headers["x-request-id"]) == 32
    assert orjson.loads(body)["offset"] == 1
    assert orjson.loads(position)["cursor"]  # the channel is at offset 1: published once


@pytest.mark.parametrize(("request_bytes", "status", "code"), [
    (publish_request("refused", 1, key="wrong-key"), 401, "unauthorized"),
    (b"POST /api/publish HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + API_KEY.encode()
     + b"\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{\"data\":1", 400,
     "bad_request"),
    (b"POST /api/publish HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + API_KEY.encode()
     + b"\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n" + b" " * 4000, 413,
     "too_large"),
    (b"POST /api/publish HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + API_KEY.encode()
     + b"\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
     + b"1a\r\n{\"channel\":\"c h\",\"data\":1}\r\n0\r\n\r\n", 400, "bad_request"),
])
async def test_refused_publishes_get_the_api_s_own_answer_and_publish_nothing(
        fast: RunningServer, request_bytes: bytes, status: int, code: str) -> None:
    conn = await Conn.open(fast.port)
    try:
        conn.writer.write(request_bytes)
        got, _, body = await conn.answer()
    finally:
        await conn.close()
    assert got == status, body
    assert orjson.loads(body)["error"]["code"] == code


async def test_a_connection_moves_between_fast_answers_and_the_asgi_app(
        fast: RunningServer) -> None:
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


async def test_a_stream_that_ends_leaves_the_connection_open_for_the_next_request(
        fast: RunningServer) -> None:
    conn = await Conn.open(fast.port)
    try:
        conn.writer.write(b"GET /stream?channel=ends HTTP/1.1\r\nHost: t\r\n\r\n")
        head = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), DEADLINE)
        assert b"transfer-encoding: chunked" in head.lower()
        await asyncio.wait_for(conn.reader.readuntil(b"\r\n"), DEADLINE)  # the ready chunk
        await asyncio.wait_for(conn.reader.readuntil(b"\r\n"), DEADLINE)
        # sse.max_duration (1 s) ends the stream with a notice and the last chunk
        rest = await asyncio.wait_for(conn.reader.readuntil(b"0\r\n\r\n"), DEADLINE)
        conn.writer.write(poll_request("ends"))
        status, _, _ = await conn.answer()
    finally:
        await conn.close()
    assert b'"op":"disconnect"' in rest
    assert status == 200

