"""An application's backend for the proxy tests: a real Starlette app under uvicorn on a free
loopback port, in a thread of its own (its own event loop, like a separate process).

``POST /{kind}`` (``connect``, ``refresh``, ``subscribe``, ``publish``, ``rpc``) records the
request (:attr:`Backend.seen`), waits :attr:`Backend.delay` for that kind, and answers what
:attr:`Backend.answers` says: a function of the request's JSON and headers returning a JSON
value (sent with 200) or a :class:`Raw` answer. It counts the requests in flight at once
(:attr:`Backend.max_in_flight`), which the concurrency tests read.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["Backend", "Raw", "Seen", "closed_port", "run_backend"]

ALLOW: dict[str, Any] = {"result": {}}


@dataclass(frozen=True)
class Raw:
    """An answer as it is: any status, body and content type (HTML, garbage)."""

    status: int
    body: bytes
    content_type: str = "text/html"


@dataclass(frozen=True)
class Seen:
    kind: str
    body: dict[str, Any]
    headers: dict[str, str]


Answer = Callable[[dict[str, Any], dict[str, str]], Any]


@dataclass
class Backend:
    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    answers: dict[str, Answer] = field(default_factory=dict)
    delay: dict[str, float] = field(default_factory=dict)
    in_flight: int = 0
    max_in_flight: int = 0

    def url(self, kind: str) -> str:
        return f"http://127.0.0.1:{self.port}/{kind}"

    def of(self, kind: str) -> list[Seen]:
        return [s for s in self.seen if s.kind == kind]

    def reset(self) -> None:
        self.seen.clear()
        self.answers.clear()
        self.delay.clear()
        self.in_flight = self.max_in_flight = 0

    async def _endpoint(self, request: Request) -> Response:
        kind = request.path_params["kind"]
        body = orjson.loads(await request.body())
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.seen.append(Seen(kind, body, headers))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay.get(kind, 0.0))
            answer = self.answers.get(kind, lambda body, headers: ALLOW)(body, headers)
        finally:
            self.in_flight -= 1
        if isinstance(answer, Raw):
            return Response(answer.body, answer.status, media_type=answer.content_type)
        return Response(orjson.dumps(answer), media_type="application/json")

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{kind}", self._endpoint, methods=["POST"])])


@contextlib.contextmanager
def run_backend() -> Iterator[Backend]:
    backend = Backend()
    config = uvicorn.Config(
        backend.app(), host="127.0.0.1", port=0, log_level="warning", lifespan="off", backlog=2048
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the proxy backend did not start")
        time.sleep(0.01)
    backend.port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield backend
    finally:
        server.should_exit = True
        server.force_exit = True
        thread.join(15)


def closed_port() -> int:
    """A loopback port nothing listens on (a backend that is down)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
