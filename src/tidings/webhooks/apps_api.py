"""The routes of applications, event types, app messages and portal tokens, under
``/api/webhooks`` (mounted before the endpoint routes, whose ``/{endpoint_id}`` would take
``/apps`` and ``/event-types``).

Who may call what is :class:`~tidings.webhooks.portal.Caller`'s decision: every route takes the
admin API key or a portal token (``Bearer tdp_…``), then asks ``need_admin()`` or
``need_app(app, write=…)``. Endpoints of another app answer 404; another app's routes 403.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, HttpUrl

from tidings.auth.apikeys import bearer_token
from tidings.exceptions import BadRequest, Forbidden
from tidings.webhooks.api import DeliveryDetail, DeliveryList, DeliveryOut, ReplayIn, ReplayOut, RotateIn
from tidings.webhooks.app_store import App, AppMessage, EventType
from tidings.webhooks.apps import apps_of
from tidings.webhooks.portal import DEFAULT_TTL, MAX_TTL, PREFIX, Caller
from tidings.webhooks.store import Endpoint

if TYPE_CHECKING:
    from tidings.webhooks.service import WebhookService

__all__ = ["make_apps_router", "mount_apps"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _storable(value: Any) -> Any:
    """What the stores keep is written with orjson: refuse what it cannot write (integers past
    64 bits, nesting past its depth) here, as a validation error, not at the store as a 500."""
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        raise ValueError(f"cannot be stored as JSON: {exc}") from None
    return value


Storable = Annotated[Any, AfterValidator(_storable)]


class AppIn(_In):
    id: str | None = Field(None, description="Your own id for it (letters, digits, _ . -); else one is made.")
    name: str = Field(min_length=1, max_length=200)
    metadata: Annotated[dict[str, Any], AfterValidator(_storable)] = Field(default_factory=dict)


class AppPatch(_In):
    name: str | None = Field(None, min_length=1, max_length=200)
    metadata: Annotated[dict[str, Any] | None, AfterValidator(_storable)] = None


class AppOut(BaseModel):
    id: str
    name: str
    metadata: dict[str, Any]
    created_at: float
    updated_at: float

    @classmethod
    def of(cls, app: App) -> AppOut:
        return cls(
            id=app.id,
            name=app.name,
            metadata=app.metadata,
            created_at=app.created_at,
            updated_at=app.updated_at,
        )


class AppList(BaseModel):
    apps: list[AppOut]


class AppEndpointIn(_In):
    url: HttpUrl
    event_types: list[str] | None = Field(None, description="Only these event types (all if absent).")
    channels: list[str] | None = Field(None, description="Channel patterns it also takes (admin key only).")
    rate_limit: float | None = Field(None, gt=0, description="Deliveries per second at most.")
    description: str = Field("", max_length=1000)


class AppEndpointPatch(_In):
    url: HttpUrl | None = None
    event_types: list[str] | None = None
    channels: list[str] | None = None
    rate_limit: float | None = Field(None, gt=0)
    description: str | None = Field(None, max_length=1000)
    enabled: bool | None = None


class AppEndpointOut(BaseModel):
    id: str
    app_id: str
    url: str
    event_types: list[str] | None
    channels: list[str]
    description: str
    enabled: bool
    disabled_reason: str | None
    rate_limit: float | None
    created_at: float
    updated_at: float
    failing_since: float | None
    secret: str | None = Field(None, description="Only in the answers to create, rotate and secret.")

    @classmethod
    def of(cls, endpoint: Endpoint, *, with_secret: bool = False) -> AppEndpointOut:
        return cls(
            id=endpoint.id,
            app_id=endpoint.app_id or "",
            url=endpoint.url,
            event_types=endpoint.events,
            channels=endpoint.channels,
            description=endpoint.description,
            enabled=endpoint.enabled,
            disabled_reason=endpoint.disabled_reason,
            rate_limit=endpoint.rate_limit,
            created_at=endpoint.created_at,
            updated_at=endpoint.updated_at,
            failing_since=endpoint.failing_since,
            secret=endpoint.secret if with_secret else None,
        )


class AppEndpointList(BaseModel):
    endpoints: list[AppEndpointOut]


class EventTypeIn(_In):
    name: str
    description: str = Field("", max_length=1000)
    schema_: Annotated[dict[str, Any] | None, AfterValidator(_storable)] = Field(
        None, alias="schema", description="JSON Schema of the payload."
    )


class EventTypePatch(_In):
    description: str | None = Field(None, max_length=1000)
    schema_: Annotated[dict[str, Any] | None, AfterValidator(_storable)] = Field(None, alias="schema")
    archived: bool | None = None


class EventTypeOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str
    description: str
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    archived: bool
    created_at: float
    updated_at: float

    @classmethod
    def of(cls, event_type: EventType) -> EventTypeOut:
        return cls(
            name=event_type.name,
            description=event_type.description,
            schema=event_type.schema,
            archived=event_type.archived,
            created_at=event_type.created_at,
            updated_at=event_type.updated_at,
        )


class EventTypeList(BaseModel):
    event_types: list[EventTypeOut]


class MessageIn(_In):
    event_type: str
    payload: Storable
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)


class MessageOut(BaseModel):
    id: str
    app_id: str
    event_type: str
    payload: Any
    created_at: float
    idempotency_key: str | None
    duplicate: bool = False
    deliveries: list[str] = Field(description="Delivery ids, one per endpoint that takes it.")

    @classmethod
    def of(cls, message: AppMessage, duplicate: bool = False) -> MessageOut:
        return cls(
            id=message.id,
            app_id=message.app_id,
            event_type=message.event_type,
            payload=message.payload,
            created_at=message.created_at,
            idempotency_key=message.idempotency_key,
            duplicate=duplicate,
            deliveries=message.deliveries,
        )


class MessageDetail(MessageOut):
    body: str = Field(description="The exact request body sent.")
    attempts: list[DeliveryOut]


class MessageList(BaseModel):
    messages: list[MessageOut]


class PortalIn(_In):
    expiry: float = Field(DEFAULT_TTL, ge=1, le=MAX_TTL, description="Seconds the token is valid.")
    read_only: bool = False


class PortalOut(BaseModel):
    url: str
    token: str
    expires_at: float
    app_id: str


class RequestOut(BaseModel):
    webhook_id: str
    event_type: str
    body: str | None = Field(description="The request body (None: not an app message).")


class AppDeliveryDetail(DeliveryDetail):
    request: RequestOut


class TestIn(_In):
    event_type: str | None = None


class TestOut(BaseModel):
    message_id: str
    delivery_id: str


def make_apps_router(service: WebhookService, *, prefix: str = "/api/webhooks") -> APIRouter:
    apps = apps_of(service)
    router = APIRouter(prefix=prefix, tags=["webhook applications"])

    async def caller(request: Request) -> Caller:
        token = bearer_token(request.headers.get("authorization"))
        if token is not None and token.startswith(PREFIX):
            return await (await apps.portal_tokens()).verify(token)
        service.node.security.check_api(request.scope, "admin")
        return Caller()

    Who = Depends(caller)

    # apps --------------------------------------------------------------------------------------

    @router.post("/apps", status_code=201, response_model=AppOut)
    async def create_app(body: AppIn, who: Caller = Who) -> AppOut:
        who.need_admin()
        return AppOut.of(await apps.create_app(body.name, body.id, body.metadata))

    @router.get("/apps", response_model=AppList)
    async def list_apps(who: Caller = Who) -> AppList:
        who.need_admin()
        return AppList(apps=[AppOut.of(a) for a in await apps.list_apps()])

    @router.get("/apps/{app_id}", response_model=AppOut)
    async def get_app(app_id: str, who: Caller = Who) -> AppOut:
        who.need_app(app_id)
        return AppOut.of(await apps.get_app(app_id))

    @router.patch("/apps/{app_id}", response_model=AppOut)
    async def update_app(app_id: str, body: AppPatch, who: Caller = Who) -> AppOut:
        who.need_admin()
        changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}
        return AppOut.of(await apps.update_app(app_id, **changes))

    @router.delete("/apps/{app_id}", status_code=204)
    async def delete_app(app_id: str, who: Caller = Who) -> Response:
        who.need_admin()
        await apps.delete_app(app_id)
        return Response(status_code=204)

    @router.post("/apps/{app_id}/portal", response_model=PortalOut)
    async def portal(
        app_id: str, request: Request, body: PortalIn | None = None, who: Caller = Who
    ) -> PortalOut:
        who.need_admin()
        body = body or PortalIn()
        token, expires_at = await apps.portal(app_id, ttl=body.expiry, read_only=body.read_only)
        origin = f"{request.url.scheme}://{request.headers.get('host') or request.url.netloc}"
        return PortalOut(
            url=f"{origin}/portal#token={token}", token=token, expires_at=expires_at, app_id=app_id
        )

    @router.delete("/apps/{app_id}/portal", status_code=204)
    async def revoke_portal(app_id: str, who: Caller = Who) -> Response:
        who.need_admin()
        await apps.revoke_portal(app_id)
        return Response(status_code=204)

    # endpoints ---------------------------------------------------------------------------------

    base = "/apps/{app_id}/endpoints"

    @router.post(base, status_code=201, response_model=AppEndpointOut)
    async def create_endpoint(app_id: str, body: AppEndpointIn, who: Caller = Who) -> AppEndpointOut:
        who.need_app(app_id, write=True)
        if body.channels and who.portal:
            raise Forbidden("channels are the provider's to set (admin API key)")
        endpoint = await apps.create_endpoint(
            app_id,
            str(body.url),
            event_types=body.event_types,
            channels=body.channels,
            rate_limit=body.rate_limit,
            description=body.description,
        )
        return AppEndpointOut.of(endpoint, with_secret=True)

    @router.get(base, response_model=AppEndpointList)
    async def list_endpoints(app_id: str, who: Caller = Who) -> AppEndpointList:
        who.need_app(app_id)
        await apps.get_app(app_id)
        return AppEndpointList(endpoints=[AppEndpointOut.of(e) for e in apps.endpoints(app_id)])

    @router.get(base + "/{endpoint_id}", response_model=AppEndpointOut)
    async def get_endpoint(app_id: str, endpoint_id: str, who: Caller = Who) -> AppEndpointOut:
        who.need_app(app_id)
        return AppEndpointOut.of(apps.endpoint(app_id, endpoint_id))

    @router.get(base + "/{endpoint_id}/secret", response_model=AppEndpointOut)
    async def get_secret(app_id: str, endpoint_id: str, who: Caller = Who) -> AppEndpointOut:
        who.need_app(app_id)
        return AppEndpointOut.of(apps.endpoint(app_id, endpoint_id), with_secret=True)

    @router.patch(base + "/{endpoint_id}", response_model=AppEndpointOut)
    async def update_endpoint(
        app_id: str, endpoint_id: str, body: AppEndpointPatch, who: Caller = Who
    ) -> AppEndpointOut:
        who.need_app(app_id, write=True)
        changes = body.model_dump(exclude_unset=True)
        if "channels" in changes and who.portal:
            raise Forbidden("channels are the provider's to set (admin API key)")
        for key in ("url", "enabled", "description", "channels"):
            if key in changes and changes[key] is None:
                raise BadRequest(f"{key} may not be null")
        if "url" in changes:
            changes["url"] = str(body.url)
        if "event_types" in changes:
            changes["events"] = changes.pop("event_types")
        return AppEndpointOut.of(await apps.update_endpoint(app_id, endpoint_id, **changes))

    @router.delete(base + "/{endpoint_id}", status_code=204)
    async def delete_endpoint(app_id: str, endpoint_id: str, who: Caller = Who) -> Response:
        who.need_app(app_id, write=True)
        await apps.delete_endpoint(app_id, endpoint_id)
        return Response(status_code=204)

    @router.post(base + "/{endpoint_id}/rotate-secret", response_model=AppEndpointOut)
    async def rotate(
        app_id: str, endpoint_id: str, body: RotateIn | None = None, who: Caller = Who
    ) -> AppEndpointOut:
        who.need_app(app_id, write=True)
        endpoint = await apps.rotate(app_id, endpoint_id, body.grace if body else None)
        return AppEndpointOut.of(endpoint, with_secret=True)

    @router.post(base + "/{endpoint_id}/test", status_code=202, response_model=TestOut)
    async def send_test(
        app_id: str, endpoint_id: str, body: TestIn | None = None, who: Caller = Who
    ) -> TestOut:
        who.need_app(app_id, write=True)
        message = await apps.send_test(app_id, endpoint_id, body.event_type if body else None)
        return TestOut(message_id=message.id, delivery_id=message.deliveries[0] if message.deliveries else "")

    @router.get(base + "/{endpoint_id}/deliveries", response_model=DeliveryList)
    async def list_deliveries(
        app_id: str,
        endpoint_id: str,
        status: Literal["pending", "succeeded", "failed"] | None = None,
        limit: int = Query(100, ge=1, le=1000),
        since: float | None = Query(None),
        who: Caller = Who,
    ) -> DeliveryList:
        who.need_app(app_id)
        found = await apps.deliveries(app_id, endpoint_id, status, limit, since)
        return DeliveryList(deliveries=[DeliveryOut.of(d) for d in found])

    @router.get(base + "/{endpoint_id}/deliveries/{delivery_id}", response_model=AppDeliveryDetail)
    async def get_delivery(
        app_id: str, endpoint_id: str, delivery_id: str, who: Caller = Who
    ) -> AppDeliveryDetail:
        who.need_app(app_id)
        delivery, message = await apps.delivery(app_id, endpoint_id, delivery_id)
        request = RequestOut(
            webhook_id=delivery.webhook_id, event_type=delivery.event, body=message.body if message else None
        )
        return AppDeliveryDetail.model_validate({**delivery.to_dict(), "request": request.model_dump()})

    @router.post(base + "/{endpoint_id}/replay", response_model=ReplayOut)
    async def replay(app_id: str, endpoint_id: str, body: ReplayIn, who: Caller = Who) -> ReplayOut:
        who.need_app(app_id, write=True)
        since = body.since.timestamp() if isinstance(body.since, datetime) else body.since
        if body.delivery_id is None and since is None:
            raise BadRequest("give delivery_id or since")
        return ReplayOut(replayed=await apps.replay(app_id, endpoint_id, body.delivery_id, since))

    # messages ----------------------------------------------------------------------------------

    @router.post("/apps/{app_id}/messages", status_code=202, response_model=MessageOut)
    async def send(app_id: str, body: MessageIn, who: Caller = Who) -> MessageOut:
        who.need_admin()
        message, duplicate = await apps.send(app_id, body.event_type, body.payload, body.idempotency_key)
        return MessageOut.of(message, duplicate)

    @router.get("/apps/{app_id}/messages", response_model=MessageList)
    async def list_messages(
        app_id: str,
        limit: int = Query(50, ge=1, le=1000),
        before: float | None = Query(None, description="Created before (Unix seconds): the next page."),
        who: Caller = Who,
    ) -> MessageList:
        who.need_app(app_id)
        return MessageList(messages=[MessageOut.of(m) for m in await apps.messages(app_id, limit, before)])

    @router.get("/apps/{app_id}/messages/{message_id}", response_model=MessageDetail)
    async def get_message(app_id: str, message_id: str, who: Caller = Who) -> MessageDetail:
        who.need_app(app_id)
        message, deliveries = await apps.message(app_id, message_id)
        out = MessageOut.of(message).model_dump()
        return MessageDetail(**out, body=message.body, attempts=[DeliveryOut.of(d) for d in deliveries])

    # the event-type catalog --------------------------------------------------------------------

    @router.post("/event-types", status_code=201, response_model=EventTypeOut, response_model_by_alias=True)
    async def create_event_type(body: EventTypeIn, who: Caller = Who) -> EventTypeOut:
        who.need_admin()
        catalog = await apps.event_types()
        return EventTypeOut.of(await catalog.create(body.name, body.description, body.schema_))

    @router.get("/event-types", response_model=EventTypeList, response_model_by_alias=True)
    async def list_event_types(include_archived: bool = False, who: Caller = Who) -> EventTypeList:
        catalog = await apps.event_types()
        found = await catalog.list(include_archived=include_archived)
        return EventTypeList(event_types=[EventTypeOut.of(t) for t in found])

    @router.get("/event-types/{name}", response_model=EventTypeOut, response_model_by_alias=True)
    async def get_event_type(name: str, who: Caller = Who) -> EventTypeOut:
        return EventTypeOut.of(await (await apps.event_types()).get(name))

    @router.patch("/event-types/{name}", response_model=EventTypeOut, response_model_by_alias=True)
    async def update_event_type(name: str, body: EventTypePatch, who: Caller = Who) -> EventTypeOut:
        who.need_admin()
        changes = body.model_dump(exclude_unset=True)
        if "schema_" in changes:
            changes["schema"] = changes.pop("schema_")
        for key in ("description", "archived"):
            if key in changes and changes[key] is None:
                raise BadRequest(f"{key} may not be null")
        return EventTypeOut.of(await (await apps.event_types()).update(name, **changes))

    @router.delete("/event-types/{name}", response_model=EventTypeOut, response_model_by_alias=True)
    async def archive_event_type(name: str, who: Caller = Who) -> EventTypeOut:
        """Archive (hide from the catalog; still accepted): ``PATCH {"archived": false}`` undoes it."""
        who.need_admin()
        return EventTypeOut.of(await (await apps.event_types()).update(name, archived=True))

    return router


def mount_apps(app: Any, service: WebhookService, *, prefix: str = "/api/webhooks") -> None:
    """Include the app routes into ``app`` (a FastAPI app or router) before the endpoint routes."""
    app.include_router(make_apps_router(service, prefix=prefix))
