"""The fast server over loopback with raw frames: what a library client would never send."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from tests.rawws import RawWS
from tests.rfc6455 import client_frame
from tests.serving import RunningServer, serve
from tidings.core.wire.websocket import OP_CLOSE, OP_CONT, OP_PING, OP_TEXT

DEADLINE = 10.0


@pytest.fixture(scope="module")
def fast() -> Iterator[RunningServer]:
    with serve(engine="fast", limits={"max_frame_bytes": 4096},
               server={"debug_echo": True}) as running:
        yield running


async def test_fragmented_command_is_carried_out(fast: RunningServer):
    ws = await RawWS.open(fast.port)
    text = b'{"op":"ping","ref":7}'
    ws.send(client_frame(OP_TEXT, text[:5], fin=False) + client_frame(OP_CONT, text[5:12], fin=False))
    ws.send(client_frame(OP_CONT, text[12:]))
    assert await ws.json() == {"op": "pong", "ref": 7}
    ws.close()


async def test_client_ping_gets_a_pong_with_the_same_payload(fast: RunningServer):
    ws = await RawWS.open(fast.port)
    ws.send(client_frame(OP_PING, b"hello"))
    assert await ws.frame() == (0xA, b"hello")
    ws.close()


async def test_close_handshake_echoes_the_code(fast: RunningServer):
    ws = await RawWS.open(fast.port)
    ws.send(client_frame(OP_CLOSE, (4321).to_bytes(2, "big") + b"bye"))
    assert await ws.close_code() == 4321


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (client_frame(OP_TEXT, b'{"op":"ping"}', mask=False), 1002),
        (client_frame(OP_TEXT, b'{"op":"ping"}', rsv=2), 1002),
        (client_frame(5, b""), 1002),
        (client_frame(OP_TEXT, b'{"op":"\xff"}'), 1007),
        (client_frame(OP_TEXT, b"\xce", fin=False) + client_frame(OP_CONT, b"A"), 1007),
        (client_frame(OP_TEXT, b"x" * 5000), 1009),
        (client_frame(OP_CLOSE, (1005).to_bytes(2, "big")), 1002),
        (client_frame(0x2, b"binary"), 1003),
        (client_frame(OP_TEXT, b"not json"), 1007),
    ],
)
async def test_violations_close_with_the_documented_code(fast: RunningServer, wire: bytes,
                                                         code: int):
    ws = await RawWS.open(fast.port)
    ws.send(wire)
    assert await ws.close_code() == code


async def test_publications_arrive_as_prebuilt_frames_in_order_after_the_reply(fast: RunningServer):
    ws = await RawWS.open(fast.port)
    ws.send(client_frame(OP_TEXT, b'{"op":"subscribe","ref":1,"channel":"raw"}'))
    assert (await ws.json())["op"] == "subscribed"
    async with httpx.AsyncClient(base_url=fast.url) as client:
        for i in range(5):
            r = await client.post("/api/publish", json={"channel": "raw", "data": i})
            assert r.status_code == 200
    got = []
    while len(got) < 5:
        msg = await ws.json()
        if msg["op"] == "message":
            got.append(msg)
    assert [m["data"] for m in got] == list(range(5))
    ws.close()


async def test_server_shutdown_closes_with_1012():
    with serve(engine="fast") as server:
        ws = await RawWS.open(server.port)
        server.server.should_exit = True
        assert await ws.close_code() == 1012


async def test_idle_client_gets_pings_then_is_closed():
    with serve(engine="fast", limits={"ping_interval": 0.2, "idle_timeout": 0.7}) as server:
        ws = await RawWS.open(server.port)
        assert await ws.frame() == (OP_PING, b"")
        assert await ws.close_code() == 1011


async def test_other_requests_and_plain_gets_of_ws_go_to_the_asgi_app(fast: RunningServer):
    async with httpx.AsyncClient(base_url=fast.url) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/ws")).status_code in (400, 403, 404, 426)
        assert (await client.get("/api/info")).status_code == 200


async def test_bad_handshake_is_refused_with_400(fast: RunningServer):
    reader, writer = await asyncio.open_connection("127.0.0.1", fast.port)
    writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n")
    response = await asyncio.wait_for(reader.read(), DEADLINE)
    assert response.startswith(b"HTTP/1.1 400 ")
    writer.close()


async def test_echo_endpoint_echoes_text_and_binary(fast: RunningServer):
    ws = await RawWS.open(fast.port, "/ws-echo")
    ws.send(client_frame(OP_TEXT, "é".encode() * 100))
    assert await ws.frame() == (OP_TEXT, "é".encode() * 100)
    ws.send(client_frame(0x2, b"\x00\x01"))
    assert await ws.frame() == (0x2, b"\x00\x01")
    ws.close()


async def test_one_write_per_frame_mode_keeps_order_and_the_slow_consumer_rule():
    with serve(engine="fast", server={"coalesce_writes": False},
               limits={"outbox_bytes": 65536}) as server:
        ws = await RawWS.open(server.port)
        ws.send(client_frame(OP_TEXT, b'{"op":"subscribe","ref":1,"channel":"nc"}'))
        assert (await ws.json())["op"] == "subscribed"
        async with httpx.AsyncClient(base_url=server.url) as client:
            for i in range(3):
                await client.post("/api/publish", json={"channel": "nc", "data": i})
            got = []
            while len(got) < 3:
                msg = await ws.json()
                if msg["op"] == "message":
                    got.append(msg["data"])
            assert got == [0, 1, 2]
            # stop reading: the kernel buffers fill, then the transport's, then 4008
            [connection] = server.node.connections.values()
            for i in range(400):
                await client.post("/api/publish", json={"channel": "nc", "data": [i, "z" * 60000]})
                if connection.closing:  # it gave up on this client
                    break
        assert connection.closing
        assert await ws.close_code() == 4008
