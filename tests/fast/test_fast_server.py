"""The owned-socket engine's internals over loopback with raw frames (the transport rules both
engines share are in the conformance suite, tests/engines/)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.rawws import RawWS
from tests.rfc6455 import client_frame
from tests.serving import RunningServer, serve
from tidings.core.wire.websocket import OP_TEXT

DEADLINE = 10.0


@pytest.fixture(scope="module")
def fast() -> Iterator[RunningServer]:
    with serve(engine="fast", limits={"max_frame_bytes": 4096}, server={"debug_echo": True}) as running:
        yield running


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


async def test_other_requests_and_plain_gets_of_ws_go_to_the_asgi_app(fast: RunningServer):
    async with httpx.AsyncClient(base_url=fast.url) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/ws")).status_code in (400, 403, 404, 426)
        assert (await client.get("/api/info")).status_code == 200


async def test_echo_endpoint_echoes_text_and_binary(fast: RunningServer):
    ws = await RawWS.open(fast.port, "/ws-echo")
    ws.send(client_frame(OP_TEXT, "é".encode() * 100))
    assert await ws.frame() == (OP_TEXT, "é".encode() * 100)
    ws.send(client_frame(0x2, b"\x00\x01"))
    assert await ws.frame() == (0x2, b"\x00\x01")
    ws.close()


async def test_one_write_per_frame_mode_keeps_order_and_the_slow_consumer_rule():
    with serve(engine="fast", server={"coalesce_writes": False}, limits={"outbox_bytes": 65536}) as server:
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
