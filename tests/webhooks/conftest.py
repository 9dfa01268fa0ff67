"""Fixtures: a real tidings server on loopback and scriptable real receivers.

Everything runs on real sockets; time is scaled down through the settings (``SCALE``), and every
wait is on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

sys.path.insert(0, str(Path(__file__).parent))  # server_main, whatever the import mode

from server_main import Server, build_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tidings.settings import Settings

DEADLINE = 15.0


async def wait_for(predicate: Callable[[], bool], within: float = DEADLINE, what: str = "condition") -> None:
    """Poll ``predicate`` until true; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.01)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def serve(app: Any) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        ws="none",
        lifespan="on",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    await wait_for(lambda: server.started or task.done(), what="uvicorn start")
    if task.done():
        task.result()
    port: int = server.servers[0].sockets[0].getsockname()[1]
    return server, task, port


async def shutdown(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    server.should_exit = True
    server.force_exit = True
    await asyncio.wait_for(task, 10)


# receivers ---------------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def json(self) -> Any:
        return json.loads(self.body)


Behaviour = Callable[[Request, int], Awaitable[Response]]


@dataclass
class Receiver:
    """A real HTTP server whose paths answer as scripted; ``requests`` records every call."""

    base_url: str = ""
    requests: list[Received] = field(default_factory=list)
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    hold: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def on(self, path: str, behaviour: Behaviour) -> str:
        self.behaviours[path] = behaviour
        return self.url(path)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        body = await request.body()
        self.requests.append(Received(path, dict(request.headers), body, time.time()))
        behaviour = self.behaviours.get(path)
        if behaviour is None:
            return Response(status_code=404)
        return await behaviour(request, len(self.at(path)))


def status(code: int, headers: dict[str, str] | None = None) -> Behaviour:
    async def answer(request: Request, count: int) -> Response:
        return Response(b"status %d" % code, status_code=code, headers=headers)

    return answer


def fail_then_succeed(failures: int) -> Behaviour:
    async def answer(request: Request, count: int) -> Response:
        return Response(status_code=500 if count <= failures else 200)

    return answer


def hang(forever: asyncio.Event) -> Behaviour:
    async def answer(request: Request, count: int) -> Response:
        await forever.wait()
        return Response(status_code=200)

    return answer


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = Starlette(routes=[Route("/{path:path}", rec.handle, methods=["POST"])])
    server, task, port = await serve(app)
    rec.base_url = f"http://127.0.0.1:{port}"
    yield rec
    rec.hold.set()
    await shutdown(server, task)


# the tidings server ------------------------------------------------------------------------

FAST_WEBHOOKS: dict[str, Any] = {
    "allow_private": ["127.0.0.0/8", "::1/128"],
    "retry_schedule": [0.05, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1],
    "jitter": 0.2,
    "timeout": 1.0,
    "throttle_floor": 0.05,
    "retry_after_max": 1.0,
    # "auto": inline in an app that mounts tidings, as these tests do;
    # TIDINGS_TEST_WEBHOOK_DISPATCHER=process runs them all on the dispatcher process.
    "dispatcher": os.environ.get("TIDINGS_TEST_WEBHOOK_DISPATCHER", "auto"),
}


@dataclass
class Hub:
    base_url: str
    server: Server
    client: httpx.AsyncClient

    async def create(self, url: str, channels: list[str], **extra: Any) -> dict[str, Any]:
        response = await self.client.post("/api/webhooks", json={"url": url, "channels": channels, **extra})
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    async def publish(self, channel: str, data: Any, event: str = "message") -> dict[str, Any]:
        response = await self.client.post(
            "/api/publish", json={"channel": channel, "data": data, "event": event}
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        assert result.pop("duplicate") is False
        return result

    async def deliveries(self, endpoint_id: str, status: str | None = None) -> list[dict[str, Any]]:
        params = {"status": status} if status else {}
        response = await self.client.get(f"/api/webhooks/{endpoint_id}/deliveries", params=params)
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()["deliveries"]
        return found


HubFactory = Callable[..., Awaitable[Hub]]


@pytest.fixture
async def make_hub(tmp_path: Path) -> AsyncIterator[HubFactory]:
    running: list[tuple[uvicorn.Server, asyncio.Task[None], httpx.AsyncClient]] = []

    async def make(webhooks: dict[str, Any] | None = None, **settings: Any) -> Hub:
        hooks = {**FAST_WEBHOOKS, "store": str(tmp_path / f"hooks{len(running)}.db"), **(webhooks or {})}
        built = build_app(Settings(webhooks=hooks, **settings))
        server, task, port = await serve(built.app)
        base = f"http://127.0.0.1:{port}"
        client = httpx.AsyncClient(base_url=base, timeout=10)
        running.append((server, task, client))
        return Hub(base, built, client)

    yield make
    for server, task, client in reversed(running):
        await client.aclose()
        await shutdown(server, task)


@pytest.fixture
async def hub(make_hub: HubFactory) -> Hub:
    return await make_hub()
