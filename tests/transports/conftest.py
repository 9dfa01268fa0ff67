"""Real tidings servers on free loopback ports for the transport tests (tests.serving)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.serving import ENGINE, RunningServer, serve

TOKEN_SECRET = "test-secret-0123456789abcdef-0123456789"
ALLOWED_ORIGIN = "http://allowed.example"

LiveServer = RunningServer
run_server = serve  # a node with the given settings until the block ends, on ENGINE


# The HTTP transport tests run on both engines: "fast" (tidings owns the /sse, /stream, /poll
# sockets) and "asgi" (everything through the ASGI app).
@pytest.fixture(scope="session", params=["fast", "asgi"])
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


@pytest.fixture(scope="session")
def http_server(engine: str) -> Iterator[LiveServer]:
    """One node for the HTTP transport tests: a 3-publication ``tiny`` namespace, a ``private``
    one, tokens, one allowed origin, quick heartbeats. Tests use channels of their own."""
    with run_server(
        engine=engine,
        namespaces={"tiny": {"history_size": 3}, "private": {"private": True}},
        sse={"retry_ms": 100, "heartbeat": 0.3},
        token_secret=TOKEN_SECRET,
        allowed_origins=[ALLOWED_ORIGIN],
        limits={"max_poll_timeout": 10},
    ) as running:
        yield running
