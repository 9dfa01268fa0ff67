"""Delta updates (issue 19, item 3) on both engines, over loopback with real clients.

A namespace with ``delta = true``; WebSocket subscribers with ``"delta": "fossil"`` and SSE /
NDJSON streams with ``delta=fossil``: the first publication in full, then ``"delta": true``
messages whose ``data`` is the fossil delta from the previous publication's data text; applied,
each gives exactly the full publication's data text (compared with a subscriber without
deltas). The first live publication after a replay or a gap goes in full. Refusals: a namespace
without the option (403 / ``forbidden``), an unknown kind (400 / ``bad_request``). The Python
client applies them across a reconnect (resume) and a gap. npm ``fossil-delta`` applying them:
tests/engines/test_delta_node.py.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.redis_server import RedisServer, redis_available
from tests.serving import RunningServer, serve
from tests.transports.readers import channel_name, publish
from tidings import Client, Gap, Publication
from tidings.core.delta import DeltaDecoder, data_text
from tidings.core.position import Position

DEADLINE = 10.0
SECRET = "delta-tests-secret-0123456789abcdef0123"
NAMESPACES = {
    "live": {"delta": True},
    "short": {"delta": True, "history_size": 2},
    "plain": {},
}


def ticker(i: int) -> dict[str, Any]:
    """A realistic ~1 KB ticker: a few fields change from one to the next."""
    return {
        "symbol": "ACME",
        "seq": i,
        "bid": round(101.25 + i * 0.01, 2),
        "ask": round(101.5 + i * 0.01, 2),
        "volume": 1_000_000 + 37 * i,
        "book": [
            [round(100 + level * 0.05, 2), 1000 + level + (i % 3 if level < 2 else 0)] for level in range(40)
        ],
        "note": "prix en €, ünïcödé",
    }


@pytest.fixture(scope="module", params=["sockets", "asgi"])
def server(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    with serve(engine=request.param, token_secret=SECRET, namespaces=NAMESPACES) as running:
        yield running


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=DEADLINE) as client:
        yield client


async def subscribe(ws: ClientConnection, channel: str, **fields: Any) -> dict[str, Any]:
    await ws.send(orjson.dumps({"op": "subscribe", "ref": 1, "channel": channel, **fields}).decode())
    return dict(orjson.loads(await asyncio.wait_for(ws.recv(), DEADLINE)))


async def frames(ws: ClientConnection, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        frame = await asyncio.wait_for(ws.recv(), DEADLINE)
        out.append(frame.encode() if isinstance(frame, str) else frame)
    return out


def check_sequence(raws: list[bytes], plain: list[bytes] | None, values: list[Any]) -> list[bool]:
    """Apply the deltas of ``raws`` (a delta subscriber's messages); each result must be the
    data of ``values`` and, byte for byte, the data text a subscriber without deltas got.
    Returns which messages were deltas."""
    decoder = DeltaDecoder()
    deltas = []
    for i, raw in enumerate(raws):
        message = orjson.loads(raw)
        deltas.append(message.get("delta") is True)
        if deltas[-1]:
            assert isinstance(message["data"], str)
            if plain is not None:
                assert len(data_text(raw)) < len(data_text(plain[i])) / 4, "a small change, a small delta"
        decoded = decoder.decode(message, raw)
        assert decoded["data"] == values[i]
        assert "delta" not in decoded
        if plain is not None:
            assert orjson.loads(plain[i]).get("delta") is None
            assert data_text(plain[i]) == (decoder._base or b"")
    assert decoder.applied == sum(deltas)
    return deltas


# WebSocket ----------------------------------------------------------------------------------------


async def test_websocket_subscriber_gets_the_first_in_full_then_deltas(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    channel = channel_name("live")
    values = [ticker(i) for i in range(6)]
    async with (
        connect(server.ws_url, open_timeout=DEADLINE) as ws,
        connect(server.ws_url, open_timeout=DEADLINE) as plain_ws,
    ):
        assert (await subscribe(ws, channel, delta="fossil"))["op"] == "subscribed"
        assert (await subscribe(plain_ws, channel))["op"] == "subscribed"
        await publish(http, channel, *values)
        raws, plain = await frames(ws, 6), await frames(plain_ws, 6)
    assert all(orjson.loads(r)["op"] == "message" for r in raws)
    assert check_sequence(raws, plain, values) == [False, True, True, True, True, True]
    # every other field is the full publication's
    for raw, full in zip(raws, plain, strict=True):
        a, b = orjson.loads(raw), orjson.loads(full)
        for key in ("channel", "offset", "epoch", "id", "time", "event", "cursor"):
            assert a[key] == b[key]


async def test_wire_stats_tell_deltas_from_full_publications(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """``wire_stats`` (the transport lab's bytes on the wire) on a delta subscription: each
    delta's message against the publication in full, as both subscribers read them."""
    channel = channel_name("live")
    values = [ticker(i) for i in range(4)]
    async with (
        connect(server.ws_url, open_timeout=DEADLINE) as ws,
        connect(server.ws_url, open_timeout=DEADLINE) as plain_ws,
    ):
        await ws.send('{"op":"wire_stats","ref":9}')
        counted = orjson.loads(await asyncio.wait_for(ws.recv(), DEADLINE))["counted"]
        assert (await subscribe(ws, channel, delta="fossil"))["op"] == "subscribed"
        assert (await subscribe(plain_ws, channel))["op"] == "subscribed"
        await publish(http, channel, *values)
        raws, plain = await frames(ws, 4), await frames(plain_ws, 4)
        await ws.send('{"op":"wire_stats","ref":10}')
        answer = orjson.loads(await asyncio.wait_for(ws.recv(), DEADLINE))
    assert counted == (server.settings.server.engine == "fast")
    if not counted:
        assert answer["messages"] == []
        return

    def size(text: bytes) -> int:  # its frame's, uncompressed
        return (2 if len(text) < 126 else 4) + len(text)

    got = [(m["offset"], m["delta"], m["uncompressed"], m["full"]) for m in answer["messages"]]
    expected = [
        (orjson.loads(r)["offset"], d, size(r), size(p))
        for r, p, d in zip(raws, plain, [False, True, True, True], strict=True)
    ]
    assert got == expected
    assert all(m["wire"] <= m["uncompressed"] and m["full"] > 3 * m["wire"] for m in answer["messages"][1:])


async def test_a_delta_is_not_sent_when_it_is_not_smaller(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    channel = channel_name("live")
    values: list[Any] = [ticker(0), "something else entirely", ticker(1), ticker(2)]
    async with connect(server.ws_url, open_timeout=DEADLINE) as ws:
        await subscribe(ws, channel, delta="fossil")
        await publish(http, channel, *values)
        raws = await frames(ws, 4)
    assert check_sequence(raws, None, values) == [False, False, False, True]


async def test_websocket_refusals(server: RunningServer) -> None:
    async with connect(server.ws_url, open_timeout=DEADLINE) as ws:
        refused = await subscribe(ws, channel_name("plain"), delta="fossil")
        assert refused["op"] == "error" and refused["code"] == "forbidden", refused
        assert "delta" in refused["message"]
        unknown = await subscribe(ws, channel_name("live"), delta="xdelta")
        assert unknown["op"] == "error" and unknown["code"] == "bad_request", unknown
        assert "xdelta" in unknown["message"]
        # the connection stays open and the channel can still be subscribed
        assert (await subscribe(ws, channel_name("live"), delta="fossil"))["op"] == "subscribed"


async def test_websocket_resume_replays_in_full_then_deltas_resume(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    channel = channel_name("live")
    values = [ticker(i) for i in range(8)]
    offsets = await publish(http, channel, *values[:4])
    epoch = orjson.loads((await http.get(f"/api/channels/{channel}/history")).content)
    epoch = epoch.get("epoch") or epoch["publications"][0]["epoch"]
    async with connect(server.ws_url, open_timeout=DEADLINE) as ws:
        reply = await subscribe(ws, channel, delta="fossil", since={"epoch": epoch, "offset": offsets[1]})
        assert reply["recovered"] is True, reply
        replayed = await frames(ws, 2)
        await publish(http, channel, *values[4:])
        live = await frames(ws, 4)
    got = [orjson.loads(r)["offset"] for r in replayed + live]
    assert got == list(range(3, 9))
    assert check_sequence(replayed + live, None, values[2:]) == [False, False, False, True, True, True]


async def test_websocket_after_a_gap_the_first_is_full(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    channel = channel_name("short")  # history of 2
    values = [ticker(i) for i in range(8)]
    offsets = await publish(http, channel, *values[:5])
    history = orjson.loads((await http.get(f"/api/channels/{channel}/history")).content)
    epoch = history["publications"][0]["epoch"]
    async with connect(server.ws_url, open_timeout=DEADLINE) as ws:
        reply = await subscribe(ws, channel, delta="fossil", since={"epoch": epoch, "offset": offsets[0]})
        assert reply["recovered"] is False and reply["available_from"] == 4, reply
        replayed = await frames(ws, 2)
        await publish(http, channel, *values[5:])
        live = await frames(ws, 3)
    assert [orjson.loads(r)["offset"] for r in replayed + live] == [4, 5, 6, 7, 8]
    assert check_sequence(replayed + live, None, values[3:]) == [False, False, False, True, True]


# SSE and NDJSON ---------------------------------------------------------------------------------------


async def stream_messages(response: httpx.Response, kind: str) -> AsyncIterator[tuple[str, bytes]]:
    """``(op, raw JSON)`` of each item of a stream: ``op`` is ``publication`` or a notice's."""
    if kind == "stream":
        async for line in response.aiter_lines():
            if line:
                op = orjson.loads(line).get("op") or "publication"
                if op != "heartbeat":
                    yield op, line.encode()
        return
    event = ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield (event if event in ("ready", "gap", "disconnect") else "publication"), line[6:].encode()
        elif not line:
            event = ""


@pytest.mark.parametrize("kind", ["sse", "stream"])
async def test_streams_get_deltas(server: RunningServer, http: httpx.AsyncClient, kind: str) -> None:
    channel = channel_name("live")
    values = [ticker(i) for i in range(10)]
    await publish(http, channel, *values[:2])
    path = "/sse" if kind == "sse" else "/stream"
    history = orjson.loads((await http.get(f"/api/channels/{channel}/history")).content)
    first = history["publications"][0]
    from tidings.core.cursor import encode_cursor

    cursor = encode_cursor({channel: Position(first["epoch"], 1)})
    params = {"channel": channel, "delta": "fossil", "cursor": cursor}
    async with asyncio.timeout(DEADLINE):
        async with (
            http.stream("GET", path, params=params) as response,
            http.stream("GET", path, params={"channel": channel, "cursor": cursor}) as plain_response,
        ):
            assert response.status_code == 200
            reader, plain_reader = stream_messages(response, kind), stream_messages(plain_response, kind)
            assert (await anext(reader))[0] == "ready"
            assert (await anext(plain_reader))[0] == "ready"
            replayed = [(await anext(reader))[1]]  # offset 2
            plain = [(await anext(plain_reader))[1]]
            await publish(http, channel, *values[2:])
            for _ in range(8):
                op, raw = await anext(reader)
                assert op == "publication"
                replayed.append(raw)
                plain.append((await anext(plain_reader))[1])
    assert [orjson.loads(r)["offset"] for r in replayed] == list(range(2, 11))
    deltas = check_sequence(replayed, plain, values[1:])
    assert deltas == [False, False, *[True] * 7]


@pytest.mark.parametrize("path", ["/sse", "/stream"])
async def test_stream_refusals(http: httpx.AsyncClient, path: str) -> None:
    refused = await http.get(path, params={"channel": channel_name("plain"), "delta": "fossil"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    assert "delta" in refused.json()["error"]["message"]
    unknown = await http.get(path, params={"channel": channel_name("live"), "delta": "vcdiff"})
    assert unknown.status_code == 400
    assert unknown.json()["error"]["code"] == "bad_request"
    assert "vcdiff" in unknown.json()["error"]["message"]


# the Python client ------------------------------------------------------------------------------------


async def take(sub: AsyncIterator[Any], n: int) -> list[Any]:
    return [await asyncio.wait_for(anext(sub), DEADLINE) for _ in range(n)]


class CuttableProxy:
    """A loopback TCP proxy whose :meth:`cut` drops every open connection (a network drop)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.open: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None
        self.cuts = 0

    async def __aenter__(self) -> CuttableProxy:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def cut(self) -> None:
        self.cuts += 1
        for writer in list(self.open):
            writer.transport.abort()
        self.open.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self.open |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@pytest.mark.parametrize("transport", ["ws", "sse", "stream"])
async def test_python_client_applies_deltas_across_a_reconnect(
    server: RunningServer, http: httpx.AsyncClient, transport: str
) -> None:
    """Deltas applied transparently; the connection drops, the client resumes, gets what it
    missed in full, then deltas again; nothing lost or repeated, the data exact."""
    channel = channel_name("live")
    values = [ticker(i) for i in range(12)]
    async with (
        CuttableProxy(server.port) as proxy,
        Client(proxy.url, transport=transport, delta=True, backoff=(0.05, 0.2)) as client,
    ):
        sub = client.subscribe(channel)
        await wait_subscribed(server, channel)
        await publish(http, channel, *values[:5])
        got = await take(sub, 5)
        assert sub.decoder is not None and sub.decoder.applied == 4
        proxy.cut()
        await publish(http, channel, *values[5:8])  # while it reconnects (or once it is back)
        got += await take(sub, 3)
        await publish(http, channel, *values[8:])
        got += await take(sub, 4)
    assert all(isinstance(p, Publication) for p in got)
    assert [p.offset for p in got] == list(range(1, 13))
    assert [p.data for p in got] == values
    assert sub.decoder.applied >= 7  # 10 → 12 at least, after the reconnect's first live one


@pytest.mark.parametrize("transport", ["ws", "sse", "stream"])
async def test_python_client_across_a_gap(
    server: RunningServer, http: httpx.AsyncClient, transport: str
) -> None:
    channel = channel_name("short")  # history of 2
    values = [ticker(i) for i in range(9)]
    await publish(http, channel, *values[:6])
    epoch = orjson.loads((await http.get(f"/api/channels/{channel}/history")).content)["publications"][0][
        "epoch"
    ]
    async with Client(server.url, transport=transport, delta=True) as client:
        sub = client.subscribe(channel, since=Position(epoch, 1))
        items = await take(sub, 3)  # the gap, then 5 and 6 in full
        await publish(http, channel, *values[6:])
        items += await take(sub, 3)
    assert isinstance(items[0], Gap) and items[0].available_from == 5
    assert [p.offset for p in items[1:]] == [5, 6, 7, 8, 9]
    assert [p.data for p in items[1:]] == values[4:]
    assert sub.decoder is not None and sub.decoder.applied == 2


async def wait_subscribed(server: RunningServer, channel: str, deadline: float = DEADLINE) -> None:
    """Until the node has a subscriber of ``channel`` (publications are then delivered)."""
    hub = server.node.hub
    end = time.monotonic() + deadline
    while not hub.subscriber_count(channel):
        assert time.monotonic() < end, "the client did not subscribe"
        await asyncio.sleep(0.01)


# two nodes over Redis -----------------------------------------------------------------------------


@pytest.mark.skipif(not redis_available(), reason="needs redis-server")
@pytest.mark.parametrize("engine", ["sockets", "asgi"])
async def test_deltas_on_a_node_fed_by_redis(engine: str) -> None:
    """Publications made on node A reach node B's delta subscribers by Redis: B links and
    computes its deltas from what its broker link hands over, in order, and a resume on B
    replays in full from Redis history, then deltas again."""
    channel = channel_name("live")
    values = [ticker(i) for i in range(10)]
    with (
        RedisServer() as redis,
        serve(engine=engine, broker=redis.url, namespaces=NAMESPACES) as a,
        serve(engine=engine, broker=redis.url, namespaces=NAMESPACES) as b,
    ):
        async with (
            httpx.AsyncClient(base_url=a.url, timeout=DEADLINE) as http_a,
            connect(b.ws_url, open_timeout=DEADLINE) as ws,
            connect(b.ws_url, open_timeout=DEADLINE) as plain_ws,
        ):
            await subscribe(ws, channel, delta="fossil")
            await subscribe(plain_ws, channel)
            await publish(http_a, channel, *values[:6])
            raws, plain = await frames(ws, 6), await frames(plain_ws, 6)
            epoch = orjson.loads(raws[0])["epoch"]
            async with connect(b.ws_url, open_timeout=DEADLINE) as resumed:
                await subscribe(resumed, channel, delta="fossil", since={"epoch": epoch, "offset": 3})
                replayed = await frames(resumed, 3)
                await publish(http_a, channel, *values[6:])
                replayed += await frames(resumed, 4)
    assert check_sequence(raws, plain, values[:6]) == [False, *[True] * 5]
    assert [orjson.loads(r)["offset"] for r in replayed] == list(range(4, 11))
    assert check_sequence(replayed, None, values[3:]) == [False, False, False, False, True, True, True]


# the CLI ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["ws", "stream"])
async def test_cli_subscribe_with_delta_prints_full_publications(
    server: RunningServer, http: httpx.AsyncClient, transport: str
) -> None:
    channel = channel_name("live")
    values = [ticker(i) for i in range(4)]
    command = [sys.executable, "-m", "tidings", "subscribe", channel, "--delta", "--count", "4"]
    process = await asyncio.create_subprocess_exec(
        *command, "--transport", transport, "--url", server.url, stdout=asyncio.subprocess.PIPE
    )
    try:
        await wait_subscribed(server, channel, DEADLINE * 3)  # a fresh interpreter starts first
        connections = list(server.node.connections.values())
        assert any(channel in (getattr(c, "deltas", None) or ()) for c in connections)
        await publish(http, channel, *values)
        out, _ = await asyncio.wait_for(process.communicate(), DEADLINE)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0
    printed = [orjson.loads(line) for line in out.splitlines()]
    assert [p["data"] for p in printed] == values
    assert not any("delta" in p for p in printed)
