"""``create_app(settings)``: the whole of tidings as one ASGI application.

Standalone, ``tidings serve`` runs it under uvicorn. Mounted in another ASGI app, the host's
lifespan must start and stop the node::

    realtime = tidings.create_app(settings)
    app = FastAPI(lifespan=realtime.lifespan)
    app.mount("/realtime", realtime)
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from importlib.resources import files
from typing import Any, cast

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Mount, Route, Router, WebSocketRoute
from starlette.types import ASGIApp

from tidings.consumers.service import ConsumerService
from tidings.core.disconnect import CloseCode
from tidings.core.wire.errors import error_body
from tidings.engines.asgi.poll import PollEndpoint
from tidings.engines.asgi.stream import SSEEndpoint, StreamEndpoint
from tidings.engines.asgi.websocket import WebSocketEndpoint
from tidings.exceptions import TidingsError
from tidings.logs import RequestIdMiddleware
from tidings.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from tidings.node import Node
from tidings.server.admin import Admin
from tidings.server.api import create_api
from tidings.server.demo import Demo, demo_settings, page_routes, static_pages
from tidings.server.errors import install_error_handlers
from tidings.server.static_files import StaticFiles
from tidings.settings import Settings
from tidings.webhooks.service import WebhookService

__all__ = ["TidingsApp", "create_app"]

Scope = dict[str, Any]


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413 (by Content-Length, or as they stream)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._refuse(send)
                return
        seen = 0
        started = refused = answered = False

        # Past the limit the refusal is sent here and the app is told the client left: an
        # exception instead would reach the app's body parsing, which answers it 400.
        async def limited_receive() -> Any:
            nonlocal seen, refused, answered
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    refused = True
                    if not started:
                        answered = True
                        await self._refuse(send)
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if answered:
                return  # the app's answer to the "disconnect"; the 413 went out instead
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, limited_receive, tracking_send)

    async def _refuse(self, send: Any) -> None:
        body = error_body("too_large", f"request body over {self.limit} bytes")
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class WebSocketRoutes:
    """A WebSocket upgrade of a path that serves none (``/sse``, ``/api/…``, or ``/ws`` with
    ``websocket = false``) is refused with 404 and the JSON error body, before any route sees
    it: the fast engine hands such upgrades here too, so both engines refuse them alike."""

    def __init__(self, app: ASGIApp, router: Router, websocket: bool) -> None:
        self.app = app
        self.router = router
        self.websocket = websocket

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket" or any(
            isinstance(route, WebSocketRoute) and route.matches(scope)[0] is Match.FULL
            for route in self.router.routes
        ):
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        route_path = (
            path[len(scope.get("root_path", "")) :] if path.startswith(scope.get("root_path", "")) else path
        )
        message = (
            f"no WebSocket endpoint at {path}"
            if self.websocket or route_path != "/ws"
            else "WebSocket is disabled on this server (setting websocket = false)"
        )
        if "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": int(CloseCode.POLICY_VIOLATION)})
            return
        body = error_body("not_found", message)
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 404,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})


class TidingsApp(Starlette):
    """The ASGI app of one node; ``node`` is its :class:`~tidings.node.Node`."""

    node: Node
    webhooks: WebhookService
    consumers: ConsumerService
    # Entered after the node starts, left before it stops (e.g. the demo generators).
    services: list[Callable[[], contextlib.AbstractAsyncContextManager[None]]]

    # Why the node did not start, when it is an error tidings raised on purpose (its message
    # says what to do); a server reports it in one line and exits (see __call__).
    startup_error: TidingsError | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """Start the node, and stop it on the way out (usable as a host app's lifespan)."""
        started = False
        try:
            async with self.node:
                await self.webhooks.start()
                try:
                    await self.consumers.start()
                    async with contextlib.AsyncExitStack() as stack:
                        for service in self.services:
                            await stack.enter_async_context(service())
                        started = True
                        yield
                finally:
                    await self.consumers.stop()
                    await self.webhooks.stop()
        except TidingsError as exc:
            if not started:
                self.startup_error = exc
            raise

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            send = self._one_line_startup_failure(send)
        await super().__call__(scope, receive, send)

    def _one_line_startup_failure(self, send: Any) -> Any:
        """Starlette reports a failed startup with the traceback, which the server logs; for an
        error of ours the message alone is what the user needs."""

        async def wrapped(message: Any) -> None:
            if message["type"] == "lifespan.startup.failed" and self.startup_error is not None:
                message = {**message, "message": f"cannot start: {self.startup_error.message}"}
            await send(message)

        return wrapped


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    node: Node = request.app.state.node
    problem = None
    if node.draining:
        problem = "draining"
    else:
        try:
            await node.broker.ping()
        except Exception as exc:
            problem = f"broker unavailable: {exc}"
    consumers: ConsumerService | None = getattr(request.app.state, "consumers", None)
    if problem is None and consumers is not None:
        lost = consumers.unreachable()
        if lost:
            problem = "; ".join(
                f"consumer {state.name} cannot reach its source: {state.error}" for state in lost
            )
    if problem:
        return Response(error_body("unavailable", problem), 503, media_type="application/json")
    return JSONResponse({"status": "ready"})


async def metrics(request: Request) -> Response:
    """Prometheus exposition of this node's metrics (``tidings.metrics``); it follows the API
    key, or ``metrics_allow`` opens it to a scraper's network."""
    node: Node = request.app.state.node
    node.security.check_metrics(request.scope)
    return Response(node.metrics.exposition(), media_type=METRICS_CONTENT_TYPE)


def create_app(settings: Settings | None = None, *, node: Node | None = None) -> TidingsApp:
    """The ASGI app serving every transport, the server API and the static files."""
    if node is None and (settings is None or settings.demo):
        settings = demo_settings(settings or Settings())  # the demos' namespace and receiver
    node = node if node is not None else Node(settings)
    settings = node.settings
    webhooks = WebhookService(node)
    consumers = ConsumerService(node)
    api = BodyLimit(create_api(node, webhooks), settings.limits.max_request_bytes)
    routes: list[Any] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/sse", SSEEndpoint(node)),
        Route("/stream", StreamEndpoint(node)),
        Route("/poll", PollEndpoint(node)),
        Mount("/api", app=cast(ASGIApp, api)),
        Route("/hooks/{name}", webhooks.receiver(), methods=["POST"]),
        Mount(
            "/static",
            app=StaticFiles(directory=str(files("tidings") / "server" / "static"), cross_origin=True),
        ),
    ]
    if settings.websocket.enabled:
        routes.insert(0, WebSocketRoute("/ws", WebSocketEndpoint(node)))
    # The console and the demo pages (server/pages/, see server/demo.py and server/admin.py).
    routes[:0] = [*Admin(node, consumers).routes(), *page_routes(("admin", "portal")), static_pages()]
    services: list[Callable[[], contextlib.AbstractAsyncContextManager[None]]] = []
    if settings.demo:
        demo = Demo(node)
        routes[:0] = demo.routes()
        services.append(demo.running)
    app = TidingsApp(routes=routes)
    app.services = services
    app.node = node
    app.webhooks = webhooks
    app.consumers = consumers
    app.state.node = node
    app.state.consumers = consumers
    app.router.lifespan_context = app.lifespan
    install_error_handlers(app)
    app.add_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
    app.add_middleware(WebSocketRoutes, router=app.router, websocket=settings.websocket.enabled)
    app.add_middleware(
        RequestIdMiddleware, trusted_proxies=node.security.proxies, access_log=node.settings.access_log
    )
    return app
