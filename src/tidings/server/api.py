"""The server API (``/api``): publish, broadcast, channels, history, presence, disconnect, info.

Every route needs an API key with the route's scope (``publish``, ``read`` or ``admin``); with
no key configured the API answers loopback clients only. OpenAPI: ``/api/openapi.json``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Send
from starlette.types import Scope as ASGIScope

from tidings._version import __version__
from tidings.auth.apikeys import Scope
from tidings.core.channels import validate_channel
from tidings.core.disconnect import CloseCode, disconnect
from tidings.core.position import Position
from tidings.exceptions import BadRequest
from tidings.node import Node
from tidings.server.errors import install_error_handlers
from tidings.transports.publish import PublishIn, PublishOut, publish_one, publish_out
from tidings.webhooks.api import make_router
from tidings.webhooks.apps_api import mount_apps
from tidings.webhooks.service import WebhookService

__all__ = ["create_api", "node_of", "require"]


def node_of(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


async def node_dependency(request: Request) -> Node:
    """The node, as a dependency (async: FastAPI runs a sync dependency in a worker thread)."""
    return node_of(request)


def require(scope: Scope) -> Callable[[Request], Awaitable[None]]:
    """A dependency that checks the caller's API key for ``scope``."""

    async def check(request: Request) -> None:
        node_of(request).security.check_api(request.scope, scope)

    return check


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BroadcastIn(_In):
    channels: list[str] = Field(min_length=1, max_length=1000)
    data: Any
    event: str = "message"
    idempotency_key: str | None = Field(None, max_length=200)


class BroadcastOut(BaseModel):
    results: list[PublishOut]


class ChannelOut(BaseModel):
    name: str
    subscribers: int
    epoch: str
    offset: int


class ChannelsOut(BaseModel):
    channels: list[ChannelOut]


class GapOut(BaseModel):
    channel: str
    epoch: str
    requested: int
    available_from: int | None


class HistoryOut(BaseModel):
    channel: str
    epoch: str
    offset: int
    publications: list[dict[str, Any]]
    gap: GapOut | None = None


class PresenceOut(BaseModel):
    channel: str
    clients: list[dict[str, Any]]


class DisconnectIn(_In):
    user: str = Field(min_length=1, max_length=200)


class DisconnectOut(BaseModel):
    disconnected: int


class InfoOut(BaseModel):
    version: str
    uptime: float
    broker: str
    broker_available: bool
    draining: bool
    connections: dict[str, int]
    channels: int
    publications: int
    deliveries: int


router = APIRouter()
NodeDep = Annotated[Node, Depends(node_dependency)]


@router.post("/publish", dependencies=[Depends(require("publish"))])
async def publish(body: PublishIn, node: NodeDep) -> PublishOut:
    """Publish ``data`` to ``channel``: appended to history, delivered to every subscriber.

    Refused with 400 when ``data`` nests deeper than ``limits.max_json_depth`` and with 413 when
    it is over the namespace's ``max_message_bytes`` (compact JSON)."""
    return await publish_one(node, body.channel, body)


@router.post("/broadcast", dependencies=[Depends(require("publish"))])
async def broadcast(body: BroadcastIn, node: NodeDep) -> BroadcastOut:
    """Publish the same data to several channels (each gets its own offset).

    All or nothing: if any channel refuses the data (a bad name, over its namespace's
    ``max_message_bytes``, too deep), nothing is published."""
    results = await node.broadcast(
        body.channels, body.data, event=body.event, idempotency_key=body.idempotency_key
    )
    return BroadcastOut(results=[publish_out(result) for result in results])


@router.get("/channels", dependencies=[Depends(require("read"))])
async def channels(node: NodeDep) -> ChannelsOut:
    """Channels with history or subscribers on this node."""
    positions = await node.broker.channels()
    counts = node.hub.channels()
    names = sorted(set(positions) | set(counts))
    out = []
    for name in names:
        pos = positions.get(name) or await node.broker.position(name)
        out.append(ChannelOut(name=name, subscribers=counts.get(name, 0), epoch=pos.epoch, offset=pos.offset))
    return ChannelsOut(channels=out)


@router.get("/channels/{channel:path}/history", dependencies=[Depends(require("read"))])
async def history(
    channel: str,
    node: NodeDep,
    since: Annotated[int | None, Query(ge=0, description="Last offset seen.")] = None,
    epoch: Annotated[str | None, Query(description="Epoch of `since` (default: current).")] = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
) -> HistoryOut:
    """Publications after ``since`` (oldest first), or the latest ``limit`` without it."""
    validate_channel(channel)
    limit = min(limit, node.settings.limits.history_limit)
    position: Position | None = None
    if since is not None:
        position = Position(epoch or (await node.broker.position(channel)).epoch, since)
    elif epoch is not None:
        raise BadRequest("epoch needs since")
    pubs, current, gap = await node.history(channel, position, limit)
    return HistoryOut(
        channel=channel,
        epoch=current.epoch,
        offset=current.offset,
        publications=[p.to_dict() for p in pubs],
        gap=GapOut(**gap.to_dict()) if gap is not None else None,
    )


@router.get("/channels/{channel:path}/presence", dependencies=[Depends(require("read"))])
async def presence(channel: str, node: NodeDep) -> PresenceOut:
    """Clients present in ``channel`` (namespaces with ``presence = true``)."""
    validate_channel(channel)
    clients = await node.presence_of(channel)
    return PresenceOut(channel=channel, clients=[c.to_dict() for c in clients])


@router.post("/disconnect", dependencies=[Depends(require("admin"))])
async def disconnect_user(body: DisconnectIn, node: NodeDep) -> DisconnectOut:
    """Close every connection of ``user`` on this node (WebSocket close 1008)."""
    count = node.disconnect_user(
        body.user, disconnect(CloseCode.POLICY_VIOLATION, "disconnected by the server")
    )
    return DisconnectOut(disconnected=count)


@router.get("/info", dependencies=[Depends(require("read"))])
async def info(node: NodeDep) -> InfoOut:
    """This node: version, uptime, broker, connections by transport, counters."""
    scheme = node.settings.broker.split(":", 1)[0]
    return InfoOut(
        version=__version__,
        uptime=time.time() - node.started_at,
        broker=scheme,
        broker_available=node.broker_available,
        draining=node.draining,
        connections=node.connection_counts(),
        channels=len(node.hub.channels()),
        publications=node.publications,
        deliveries=node.hub.deliveries,
    )


def _guard_description(api: FastAPI, node: Node) -> None:
    """The OpenAPI document and the docs page follow the key like every route (any key will
    do): FastAPI adds them as plain routes, so their endpoints are wrapped here."""
    for route in api.router.routes:
        if isinstance(route, Route) and route.path in (
            api.openapi_url,
            api.docs_url,
            api.swagger_ui_oauth2_redirect_url,
        ):
            route.app = _checked(route.app, node)


def _checked(app: ASGIApp, node: Node) -> ASGIApp:
    async def checked(scope: ASGIScope, receive: Receive, send: Send) -> None:
        node.security.check_api(scope, None)  # the app's error handlers answer a refusal
        await app(scope, receive, send)

    return checked


def create_api(node: Node, webhooks: WebhookService | None = None) -> FastAPI:
    """The FastAPI application mounted at ``/api``."""
    api = FastAPI(
        title="tidings server API",
        version=__version__,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        description="Publish to channels and inspect them. Errors: "
        '`{"error": {"code": "...", "message": "..."}}`.',
    )
    api.state.node = node
    install_error_handlers(api)
    _guard_description(api, node)
    api.include_router(router)
    if webhooks is not None:
        mount_apps(api, webhooks, prefix="/webhooks")  # first: /{endpoint_id} would take /apps
        api.include_router(
            make_router(webhooks, dependencies=[Depends(require("admin"))], prefix="/webhooks")
        )
    return api
