"""What the admin console (``/admin``) needs beyond the public server API.

- ``GET /api/admin/auth``: ``{"key_required": bool}``, open to all, so the console asks for a key
  only when the server has one (and no request fails just to find out);
- ``GET /api/admin/snapshot``: one statistics snapshot (JSON);
- ``GET /api/admin/stream``: Server-Sent Events, ``event: stats`` with a snapshot once a second.

Both need the ``admin`` scope. The key travels as ``Authorization: Bearer`` (the console reads the
stream with ``fetch``, which can set headers) or, for an ``EventSource``, as ``?key=`` (which then
shows up in access logs: prefer the header).

A snapshot: ``{"time", "nodes": [{"id", "version", "uptime", "broker", "broker_available",
"draining", "connections": {transport: n}, "publications", "deliveries"}], "channels": [{"name",
"subscribers", "epoch", "offset", "rate"}], "consumers": [{"name", "kind", "source", "connected",
"error", "lag", "published", "failed", "dead_lettered", "reconnects"}], "features": {"webhooks":
bool, "apps": bool}}``. ``rate`` is
publications per second since the previous snapshot of the same stream (0 in a single snapshot).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from tidings._version import __version__
from tidings.consumers.service import ConsumerService
from tidings.node import Node

__all__ = ["Admin", "snapshot"]

INTERVAL = 1.0
NODE_ID = f"{socket.gethostname()}:{os.getpid()}"


async def snapshot(
    node: Node,
    previous: dict[str, tuple[float, int]] | None = None,
    consumers: ConsumerService | None = None,
) -> dict[str, Any]:
    """The node's statistics now; ``previous`` (name -> (time, offset)) is updated for rates."""
    now = time.monotonic()
    positions = await node.broker.channels()
    counts = node.hub.channels()
    channels = []
    for name in sorted(set(positions) | set(counts)):
        position = positions.get(name) or await node.broker.position(name)
        rate = 0.0
        if previous is not None:
            before = previous.get(name)
            if before is not None and now > before[0] and position.offset >= before[1]:
                rate = (position.offset - before[1]) / (now - before[0])
            previous[name] = (now, position.offset)
        channels.append(
            {
                "name": name,
                "subscribers": counts.get(name, 0),
                "epoch": position.epoch,
                "offset": position.offset,
                "rate": round(rate, 2),
            }
        )
    this_node = {
        "id": NODE_ID,
        "version": __version__,
        "uptime": round(time.time() - node.started_at, 1),
        "broker": node.settings.broker.split(":", 1)[0],
        "broker_available": node.broker_available,
        "draining": node.draining,
        "connections": node.connection_counts(),
        "publications": node.publications,
        "deliveries": node.hub.deliveries,
    }
    return {
        "time": int(time.time() * 1000),
        "nodes": [this_node],
        "channels": channels,
        "consumers": consumers.snapshot() if consumers is not None else [],
    }


class Admin:
    """The admin endpoints of one node."""

    def __init__(self, node: Node, consumers: ConsumerService | None = None) -> None:
        self.node = node
        self.consumers = consumers

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/admin/auth", self.auth),
            Route("/api/admin/snapshot", self.get_snapshot),
            Route("/api/admin/stream", self.stream),
        ]

    async def auth(self, request: Request) -> Response:
        return JSONResponse({"key_required": bool(self.node.settings.api_key_scopes())})

    def _check(self, request: Request) -> None:
        scope: dict[str, Any] = dict(request.scope)
        key = request.query_params.get("key")
        if key and "authorization" not in request.headers:
            scope["headers"] = [
                *request.scope["headers"],
                (b"authorization", f"Bearer {key}".encode("latin-1")),
            ]
        self.node.security.check_api(scope, "admin")

    async def get_snapshot(self, request: Request) -> Response:
        self._check(request)
        return JSONResponse(
            await snapshot(self.node, consumers=self.consumers) | await self._features(request)
        )

    async def stream(self, request: Request) -> Response:
        self._check(request)
        return StreamingResponse(
            self._events(await self._features(request)),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @staticmethod
    async def _features(request: Request) -> dict[str, Any]:
        """What the console may offer: whether this app answers the webhooks API, and its
        applications (``/api/webhooks/apps``: event types and portal links too)."""
        return {
            "features": {
                "webhooks": await _answers(request, "/api/webhooks"),
                "apps": await _answers(request, "/api/webhooks/apps"),
            }
        }

    async def _events(self, features: dict[str, Any]) -> AsyncIterator[bytes]:
        previous: dict[str, tuple[float, int]] = {}
        yield b"retry: 2000\n\n"
        while not self.node.draining:  # the response is cancelled when the client goes
            data = orjson.dumps(await snapshot(self.node, previous, self.consumers) | features)
            yield b"event: stats\ndata: " + data + b"\n\n"
            await asyncio.sleep(INTERVAL)


async def _answers(request: Request, path: str) -> bool:
    """Whether the app answers ``GET path`` (with the caller's credentials) other than 404.

    Asked of the app itself, in process, so it holds however the routes were mounted."""
    status = 404

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        key: request.scope[key]
        for key in ("type", "asgi", "http_version", "scheme", "client", "server", "headers")
        if key in request.scope
    }
    scope |= {
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"limit=1",
    }
    await request.app(scope, receive, send)
    return status != 404
