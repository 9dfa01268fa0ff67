"""Names nobody uses cost nothing once the client is gone (Issue 17.5).

A hostile client can name any channel: reading the history or presence of a never-published
channel, or subscribing and unsubscribing, must leave no entry behind. The proof counts entries:
every dict, set, list or deque held by the node, its broker, presence, hub, metrics and limiter
is back to its size before the flood (RSS is too noisy to assert on).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from tests.serving import serve

OPS = 6_000  # WebSocket commands, each on a name never used before (the slow test: 50,000)
BATCH = 300  # commands sent before their replies are read (100 subscriptions at most)
HTTP_OPS = 200  # each of: API history, API presence, short poll
NAMESPACES = {"room": {"presence": True}}
OWNERS = ("", "broker", "presence", "hub", "metrics", "security.limiter")


def table_sizes(node: Any) -> dict[str, int]:
    """The length of every container the node's parts hold, by ``owner.attribute``."""
    sizes: dict[str, int] = {}
    for owner in OWNERS:
        obj = node
        for part in filter(None, owner.split(".")):
            obj = getattr(obj, part)
        names = set(getattr(obj, "__dict__", {}))
        names.update(n for cls in type(obj).__mro__ for n in getattr(cls, "__slots__", ()))
        for name in names:
            value = getattr(obj, name, None)
            if isinstance(value, dict | set | list | deque):
                sizes[f"{owner or 'node'}.{name}"] = len(value)
    return sizes


def command(i: int) -> bytes:
    """One of the ops a client can send about any name, on a name of its own."""
    kind = i % 6
    since = {"epoch": "x7Kq", "offset": 3}
    if kind == 0:
        return orjson.dumps({"op": "history", "ref": i, "channel": f"h{i}"})
    if kind == 1:
        return orjson.dumps({"op": "history", "ref": i, "channel": f"h{i}", "since": since})
    if kind == 2:
        return orjson.dumps({"op": "presence", "ref": i, "channel": f"room:{i}"})
    if kind == 3:
        return orjson.dumps({"op": "subscribe", "ref": i, "channel": f"room:{i}", "since": since})
    if kind == 4:
        return orjson.dumps({"op": "subscribe", "ref": i, "channel": f"s{i}"})
    return orjson.dumps({"op": "history", "ref": i, "channel": f"room:{i}", "limit": 1})


async def flood(ws_url: str, start: int, count: int) -> None:
    async with connect(ws_url, max_queue=None) as ws:
        for first in range(start, start + count, BATCH):
            subscribed: list[str] = []
            batch = range(first, min(first + BATCH, start + count))
            for i in batch:
                await ws.send(command(i).decode())
            for _ in batch:
                reply = await next_reply(ws)
                assert reply["op"] != "error", reply
                if reply["op"] == "subscribed":
                    subscribed.append(reply["channel"])
            for channel in subscribed:
                await ws.send(orjson.dumps({"op": "unsubscribe", "ref": 0, "channel": channel}).decode())
            for _ in subscribed:
                reply = await next_reply(ws)
                assert reply["op"] == "unsubscribed", reply


async def next_reply(ws: Any) -> dict[str, Any]:
    """The next reply to a command (join/leave notices of the presence namespace skipped)."""
    while True:
        message: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
        if "ref" in message:
            return message


async def http_reads(url: str, start: int, count: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        for i in range(start, start + count):
            for path, params in (
                (f"/api/channels/a{i}/history", {}),
                (f"/api/channels/room:a{i}/presence", {}),
                ("/poll", {"channel": f"q{i}", "timeout": "0"}),
            ):
                response = await http.get(path, params=params)
                assert response.status_code == 200, (path, response.text)


async def settled(node: Any, baseline: dict[str, int], deadline: float = 15.0) -> dict[str, int]:
    """The sizes once the node has let the client go (broker unsubscribes run in background)."""
    end = time.monotonic() + deadline
    while True:
        sizes = table_sizes(node)
        if sizes == baseline or time.monotonic() > end:
            return sizes
        await asyncio.sleep(0.05)


async def test_names_nobody_uses_leave_no_entry_behind():
    await names_leave_no_entry(OPS)


@pytest.mark.long
async def test_fifty_thousand_names_nobody_uses_leave_no_entry_behind():
    await names_leave_no_entry(50_000)


async def names_leave_no_entry(ops: int) -> None:
    with serve(namespaces=NAMESPACES) as server:
        node = server.node
        # warm up: every kind of op once, so lazily made parts (metric labels) exist already
        await flood(server.ws_url, 0, 12)
        await http_reads(server.url, 0, 2)
        baseline = await settled(node, {}, deadline=1.0)
        await flood(server.ws_url, 100, ops)
        await http_reads(server.url, 100, HTTP_OPS)
        after = await settled(node, baseline)
        grown = {
            name: (baseline.get(name), size) for name, size in after.items() if size != baseline.get(name)
        }
        assert not grown, f"entries kept for names nobody uses: {grown}"
