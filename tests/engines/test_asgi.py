"""The ASGI engine (``server.engine = "uvicorn"``, every app made by ``create_app()``) against
the engine conformance suite."""

from __future__ import annotations

import asyncio
import contextlib
from typing import ClassVar

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

from tests.engines.conformance import EngineConformance
from tests.engines.proxy_conformance import ProxyConformance
from tests.serving import serve
from tests.transports.readers import channel_name, publish
from tidings.core.wire.deflate import Deflate, negotiate
from tidings.engines.uvicorn_internals import RecentlyCompressed


class TestASGIEngine(EngineConformance):
    engine = "asgi"
    differs: ClassVar[dict[str, str]] = {}


class TestASGIProxies(ProxyConformance):
    engine = "asgi"


def test_a_publication_is_compressed_once_for_all_its_subscribers() -> None:
    """The ASGI engine hands each subscriber's copy of a publication to the server, which
    compresses it once (tidings.engines.uvicorn_internals.RecentlyCompressed): every copy after
    the first is found there; and what is forgotten past the budget is the oldest."""
    recent = RecentlyCompressed(budget=10_000)
    deflate = negotiate("permessage-deflate", 256)
    assert deflate is not None
    message = b'{"op":"message","data":"' + b"tidings " * 500 + b'"}'
    first = recent.compress(deflate, message)
    assert first is not None and len(first) < len(message)
    assert recent.compress(deflate, bytes(message)) is first  # an equal copy: no new work
    assert recent.compress(deflate, b"short") is None
    recent.compress(deflate, message.replace(b"tidings", b"tidingz"))
    recent.compress(deflate, message.replace(b"tidings", b"tidingx"))  # over the budget
    assert recent.compress(deflate, bytes(message)) is not first  # forgotten: compressed again


async def test_subscribers_of_the_asgi_engine_share_the_compression(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three compressed subscribers, one publication: it is deflated once."""
    calls: list[int] = []
    compress = Deflate.compress

    def counted(self: Deflate, payload: bytes, previous: bytes | None = None) -> bytes | None:
        calls.append(len(payload))
        return compress(self, payload, previous)

    monkeypatch.setattr(Deflate, "compress", counted)
    channel = channel_name()
    data = {"text": "shared " * 300}
    with serve(engine="asgi") as server:
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(connect(server.ws_url)) for _ in range(3)]
            for ws in clients:
                await ws.send(orjson.dumps({"op": "subscribe", "ref": 1, "channel": channel}).decode())
                assert orjson.loads(await asyncio.wait_for(ws.recv(), 10))["op"] == "subscribed"
            async with httpx.AsyncClient(base_url=server.url) as http:
                await publish(http, channel, data)
            for ws in clients:
                assert orjson.loads(await asyncio.wait_for(ws.recv(), 10))["data"] == data
    assert len([n for n in calls if n > 1000]) == 1
