"""A real tidings server on a free loopback port, for tests (uvicorn in a background thread).

``engine`` picks how it serves: ``"sockets"`` (alias ``"fast"``: the owned-socket engine,
``server.engine = "fast"``) or ``"asgi"`` (everything through the ASGI app). The e2e tests run
on both (``tests/e2e/conftest.py`` sets :data:`ENGINE` per test).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import uvicorn

from tidings.server.run import TidingsServer, uvicorn_config
from tidings.settings import Settings, load_settings

ENGINE: ContextVar[str] = ContextVar("tidings_test_engine", default="fast")
_ENGINE_SETTING = {"fast": "fast", "sockets": "fast", "asgi": "uvicorn"}


@dataclass
class RunningServer:
    settings: Settings
    server: uvicorn.Server
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def node(self) -> Any:
        return self.server.config.app.node


def wait_started(server: uvicorn.Server, thread: threading.Thread, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)


@contextlib.contextmanager
def serve(
    settings: Settings | None = None,
    *,
    engine: str | None = None,
    certfile: Any = None,
    keyfile: Any = None,
    **overrides: Any,
) -> Iterator[RunningServer]:
    """Run a node until the block ends; ``overrides`` are settings (port defaults to 0);
    ``certfile``/``keyfile`` serve TLS as ``tidings serve --certfile --keyfile`` does;
    ``engine`` is ``"sockets"`` (or ``"fast"``) or ``"asgi"`` (default: :data:`ENGINE`)."""
    overrides.setdefault("port", 0)
    server_settings = {"engine": _ENGINE_SETTING[engine or ENGINE.get()]}
    server_settings.update(overrides.pop("server", {}))
    if settings is None:
        settings = load_settings(server=server_settings, **overrides)
    else:
        settings = settings.model_copy(update={"server": settings.server.model_copy(update=server_settings)})
    config = uvicorn_config(settings, certfile=certfile, keyfile=keyfile)
    config.log_level = "warning"
    server = TidingsServer(config)
    # The loop `tidings serve` uses (uvloop), not the test's.
    loop_factory = config.get_loop_factory()

    def run() -> None:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(server.serve())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_started(server, thread)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningServer(settings, server, port)
    finally:
        server.should_exit = True
        thread.join(15)
