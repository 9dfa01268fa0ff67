"""The rules of the streaming transports (SSE, NDJSON) that both engines share: replay under the
slow-consumer limit, heartbeat spacing, the first SSE block. Real servers, real clients."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time

import httpx
import orjson
import pytest
from httpx_sse import aconnect_sse

from tests.transports.conftest import run_server
from tests.transports.readers import channel_name, dechunk, publish, reader, slow_consumers

DEADLINE = 15.0


@pytest.mark.parametrize("kind", ["sse", "stream"])
async def test_a_resume_longer_than_the_outbox_limit_is_replayed_whole(engine: str, kind: str) -> None:
    """100 publications of 20 KB (2 MB, twice ``limits.outbox_bytes``) after the client's cursor:
    the resume gets ready and all 100 in order, not a slow-consumer notice (on every retry)."""
    channel = channel_name()
    payload = "x" * 20_000
    with run_server() as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=DEADLINE) as http:
            assert server.settings.limits.outbox_bytes < 100 * len(payload)
            start = (await http.get("/poll", params={"channel": channel, "timeout": 0})).json()
            await publish(http, channel, *[payload] * 100)
            resumed = reader(kind, http, [channel], cursor=start["cursor"])
            try:
                ready = await resumed.start()
                assert ready["op"] == "ready", ready
                items = await resumed.take(100)
            finally:
                await resumed.close()
    assert [item.get("offset") for item in items] == list(range(1, 101)), [
        item.get("op") for item in items[:3]
    ]
    assert all(item["data"] == payload for item in items)


@pytest.mark.parametrize("path", ["/sse", "/stream"])
async def test_an_idle_stream_writes_a_heartbeat_every_heartbeat_seconds(engine: str, path: str) -> None:
    """No two writes of an idle stream are further apart than ``sse.heartbeat`` (plus the
    loop's latency): a proxy timeout above the setting never cuts it."""
    heartbeat = 0.6
    with run_server(sse={"heartbeat": heartbeat}) as server:
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=DEADLINE) as http,
            http.stream("GET", path, params={"channel": channel_name()}) as response,
        ):
            arrivals: list[float] = []
            async with asyncio.timeout(DEADLINE):
                async for _ in response.aiter_raw():
                    arrivals.append(time.monotonic())  # the ready notice, then heartbeats
                    if len(arrivals) == 4:
                        break
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert max(gaps) < heartbeat + 0.35, gaps


async def test_every_sse_event_carries_json_data_and_the_first_is_ready(engine: str) -> None:
    """``retry:`` is in the ready notice's block: a client such as httpx-sse, which yields a
    data-less block as a message, never sees an event whose data is not JSON."""
    channel = channel_name()
    with run_server(sse={"retry_ms": 1500}) as server:
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=DEADLINE) as http,
            aconnect_sse(http, "GET", "/sse", params={"channel": channel}) as source,
        ):
            events = []
            async with asyncio.timeout(DEADLINE):
                async for event in source.aiter_sse():
                    events.append(event)
                    if event.event == "ready":
                        await publish(http, channel, {"n": 1})
                    else:
                        break
    assert [event.event for event in events] == ["ready", "message"]
    assert [orjson.loads(event.data).get("offset") for event in events] == [None, 1]
    assert events[0].retry == 1500


async def test_a_client_that_resumes_and_then_reads_nothing_is_still_cut_as_slow(engine: str) -> None:
    """The replay's allowance does not unbound memory: once live data comes on top of an unread
    replay past the limit, the stream ends as a slow consumer (4008, behind what the socket
    held) and the node forgets it."""
    channel = channel_name()
    with run_server() as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=DEADLINE) as http:
            start = (await http.get("/poll", params={"channel": channel, "timeout": 0})).json()
            await publish(http, channel, *["r" * 20_000] * 100)
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(DEADLINE)
            sock.connect(("127.0.0.1", server.port))
            request = f"GET /stream?channel={channel}&cursor={start['cursor']} HTTP/1.1\r\nHost: t\r\n\r\n"
            sock.sendall(request.encode())
            received = sock.recv(4096)  # the head and the ready line; then nothing is read
            for i in range(400):
                await publish(http, channel, "x" * 60_000)
                if i % 5 == 4 and await slow_consumers(http, "stream"):
                    break
            else:
                raise AssertionError("the stream never overflowed")
            with sock:  # up to the response's last chunk
                while not received.endswith(b"\r\n0\r\n\r\n") and (
                    chunk := await asyncio.to_thread(sock.recv, 1 << 20)
                ):
                    received += chunk
            deadline = time.monotonic() + DEADLINE
            while server.node.connection_counts().get("stream", 0):
                assert time.monotonic() < deadline, "the stream did not leave the node"
                await asyncio.sleep(0.01)
    lines = [orjson.loads(line) for line in dechunk(received.partition(b"\r\n\r\n")[2]).splitlines()]
    assert lines[0]["op"] == "ready"
    assert [line["offset"] for line in lines[1:101]] == list(range(1, 101))  # the replay, whole
    assert lines[-1]["op"] == "disconnect" and lines[-1]["code"] == 4008
