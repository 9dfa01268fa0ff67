"""Real tidings servers on free loopback ports for the transport tests (uvicorn in a thread)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn

from tidings.node import Node
from tidings.server.run import uvicorn_config
from tidings.settings import Settings, load_settings

TOKEN_SECRET = "test-secret-0123456789abcdef-0123456789"
ALLOWED_ORIGIN = "http://allowed.example"


@dataclass
class LiveServer:
    settings: Settings
    server: uvicorn.Server
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def node(self) -> Node:
        node: Node = self.server.config.app.node
        return node


# The engine run_server uses: "fast" (tidings owns /sse, /stream, /poll sockets) or "uvicorn"
# (everything through ASGI). The HTTP transport tests run on both (see the ``engine`` fixture).
ENGINE: ContextVar[str] = ContextVar("tidings_transport_engine", default="fast")


@pytest.fixture(scope="session", params=["fast", "uvicorn"])
def engine(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture(autouse=True)
def _engine_of_run_server(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests that ask for ``engine`` (or ``http_server``) start their own servers on it too."""
    if "engine" not in request.fixturenames:
        yield
        return
    token = ENGINE.set(request.getfixturevalue("engine"))
    try:
        yield
    finally:
        ENGINE.reset(token)


@contextlib.contextmanager
def run_server(**overrides: Any) -> Iterator[LiveServer]:
    """Serve a node with ``overrides`` as settings until the block ends (port: any free one)."""
    overrides.setdefault("port", 0)
    overrides.setdefault("server", {"engine": ENGINE.get()})
    settings = load_settings(**overrides)
    config = uvicorn_config(settings)
    config.log_level = "warning"
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield LiveServer(settings, server, port)
    finally:
        server.should_exit = True
        thread.join(15)


@pytest.fixture(scope="session")
def http_server(engine: str) -> Iterator[LiveServer]:
    """One node for the HTTP transport tests: a 3-publication ``tiny`` namespace, a ``private``
    one, tokens, one allowed origin, quick heartbeats. Tests use channels of their own."""
    with run_server(
        server={"engine": engine},
        namespaces={"tiny": {"history_size": 3}, "private": {"private": True}},
        sse={"retry_ms": 100, "heartbeat": 0.3},
        token_secret=TOKEN_SECRET,
        allowed_origins=[ALLOWED_ORIGIN],
        limits={"max_poll_timeout": 10},
    ) as running:
        yield running
