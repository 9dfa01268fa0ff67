"""tidings mounted inside a host FastAPI application, the host's lifespan driving the node."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

import tidings
from tests.serving import wait_started
from tests.transports.readers import publish, reader
from tests.wsclient import WS


async def test_mounted_app_round_trips_websocket_and_api_through_the_mount():
    realtime = tidings.create_app(tidings.load_settings())
    host = FastAPI(lifespan=realtime.lifespan)

    @host.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    host.mount("/realtime", realtime)
    server = uvicorn.Server(
        uvicorn.Config(host, host="127.0.0.1", port=0, log_level="warning", ws="websockets-sansio")
    )
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    await asyncio.to_thread(wait_started, server, thread)
    port = server.servers[0].sockets[0].getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    try:
        assert realtime.node.started_at > 0  # the host's lifespan started the node
        async with (
            await WS.open(f"ws://127.0.0.1:{port}/realtime/ws") as ws,
            httpx.AsyncClient(base_url=base) as client,
        ):
            await ws.request("subscribe", channel="mounted")
            r = await client.post("/realtime/api/publish", json={"channel": "mounted", "data": 7})
            assert r.status_code == 200
            [msg] = await ws.messages(1)
            assert msg["data"] == 7
            assert (await client.get("/hello")).json() == {"hello": "world"}
            doc = (await client.get("/realtime/api/openapi.json")).json()
            assert doc["servers"] == [{"url": "/realtime/api"}]
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.parametrize("kind", ["sse", "stream"])
async def test_a_long_resume_on_a_mounted_app_is_replayed_whole(kind: str) -> None:
    """Issue 18, row 1, on an app made by ``create_app()`` under a plain uvicorn (not
    ``tidings serve``): 100 publications of 20 KB (twice ``limits.outbox_bytes``) after the
    client's cursor come whole after ``ready``, not as a slow-consumer notice (for ever, on every
    retry)."""
    realtime = tidings.create_app(tidings.load_settings())
    server = uvicorn.Server(uvicorn.Config(realtime, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    await asyncio.to_thread(wait_started, server, thread)
    port = server.servers[0].sockets[0].getsockname()[1]
    payload = "x" * 20_000
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=15) as http:
            assert realtime.node.settings.limits.outbox_bytes < 100 * len(payload)
            start = (await http.get("/poll", params={"channel": "replayed", "timeout": 0})).json()
            await publish(http, "replayed", *[payload] * 100)
            resumed = reader(kind, http, ["replayed"], cursor=start["cursor"])
            try:
                ready = await resumed.start()
                items = await resumed.take(100)
            finally:
                await resumed.close()
    finally:
        server.should_exit = True
        thread.join(10)
    assert ready["op"] == "ready", ready
    assert [item.get("offset") for item in items] == list(range(1, 101))
    assert all(item["data"] == payload for item in items)
