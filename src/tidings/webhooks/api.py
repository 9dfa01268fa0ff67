"""The /api/webhooks routes (DESIGN.md section 4) as a FastAPI router over a WebhookService.

Errors are raised as tidings exceptions; the app's error handler turns them into the JSON error
shape. Secrets appear only in the answers to create and rotate-secret.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from tidings.exceptions import BadRequest
from tidings.webhooks.store import Delivery, Endpoint

if TYPE_CHECKING:  # the service mounts this router
    from tidings.webhooks.service import WebhookService

__all__ = ["EndpointIn", "EndpointOut", "EndpointPatch", "ReplayIn", "make_router"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EndpointIn(_In):
    url: HttpUrl
    channels: list[str] = Field(min_length=1, description="Channel patterns; * is a wildcard.")
    events: list[str] | None = Field(None, description="Only these event types (all if absent).")
    description: str = Field("", max_length=1000)
    rate_limit: float | None = Field(None, gt=0, description="Deliveries per second at most.")
    max_concurrency: int | None = Field(None, ge=1, le=256)
    ordered: bool = Field(False, description="Strict ordering: one delivery in flight.")


class EndpointPatch(_In):
    url: HttpUrl | None = None
    channels: list[str] | None = Field(None, min_length=1)
    events: list[str] | None = None
    description: str | None = Field(None, max_length=1000)
    enabled: bool | None = None
    rate_limit: float | None = Field(None, gt=0)
    max_concurrency: int | None = Field(None, ge=1, le=256)
    ordered: bool | None = None


class EndpointOut(BaseModel):
    id: str
    url: str
    channels: list[str]
    events: list[str] | None
    description: str
    enabled: bool
    disabled_reason: str | None
    rate_limit: float | None
    max_concurrency: int | None
    ordered: bool
    created_at: float
    updated_at: float
    failing_since: float | None
    secret: str | None = Field(None, description="Only in the answers to create and rotate.")
    app_id: str | None = Field(None, description="The application it belongs to, if any.")

    @classmethod
    def of(cls, endpoint: Endpoint, *, with_secret: bool = False) -> EndpointOut:
        return cls(
            id=endpoint.id,
            url=endpoint.url,
            channels=endpoint.channels,
            events=endpoint.events,
            description=endpoint.description,
            enabled=endpoint.enabled,
            disabled_reason=endpoint.disabled_reason,
            rate_limit=endpoint.rate_limit,
            max_concurrency=endpoint.max_concurrency,
            ordered=endpoint.ordered,
            created_at=endpoint.created_at,
            updated_at=endpoint.updated_at,
            failing_since=endpoint.failing_since,
            secret=endpoint.secret if with_secret else None,
            app_id=endpoint.app_id,
        )


class EndpointList(BaseModel):
    webhooks: list[EndpointOut]


class AttemptOut(BaseModel):
    at: float
    status: int | None
    duration_ms: float
    error: str | None
    response: str
    outcome: str


class DeliveryOut(BaseModel):
    """A delivery as listed: its state and last result; the attempt log is in its detail."""

    id: str
    endpoint_id: str
    webhook_id: str
    channel: str
    event: str
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    next_attempt_at: float | None
    created_at: float
    updated_at: float
    last_status: int | None
    last_error: str | None

    @classmethod
    def of(cls, delivery: Delivery) -> DeliveryOut:
        return cls.model_validate(delivery.summary())


class DeliveryDetail(DeliveryOut):
    """One delivery with every attempt made (``GET …/deliveries/{id}``)."""

    attempt_log: list[AttemptOut]

    @classmethod
    def of(cls, delivery: Delivery) -> DeliveryDetail:
        return cls.model_validate(delivery.to_dict())


class DeliveryList(BaseModel):
    deliveries: list[DeliveryOut]


class ReplayIn(_In):
    delivery_id: str | None = Field(None, description="Replay this delivery …")
    since: float | datetime | None = Field(
        None, description="… or every failed delivery created since (Unix seconds or ISO 8601)."
    )


class ReplayOut(BaseModel):
    replayed: int


class RotateIn(_In):
    grace: float | None = Field(None, ge=0, description="Seconds the old secret keeps signing.")


class TestOut(BaseModel):
    delivery_id: str
    webhook_id: str


def make_router(
    service: WebhookService, *, dependencies: Sequence[Any] = (), prefix: str = "/api/webhooks"
) -> APIRouter:
    router = APIRouter(prefix=prefix, tags=["webhooks"], dependencies=list(dependencies))

    @router.post("", status_code=201, response_model=EndpointOut)
    async def create_endpoint(body: EndpointIn) -> EndpointOut:
        endpoint = await service.create(
            str(body.url),
            body.channels,
            events=body.events,
            description=body.description,
            rate_limit=body.rate_limit,
            max_concurrency=body.max_concurrency,
            ordered=body.ordered,
        )
        return EndpointOut.of(endpoint, with_secret=True)

    @router.get("", response_model=EndpointList, response_model_exclude_none=False)
    async def list_endpoints() -> EndpointList:
        return EndpointList(webhooks=[EndpointOut.of(e) for e in service.all()])

    @router.get("/{endpoint_id}", response_model=EndpointOut)
    async def get_endpoint(endpoint_id: str) -> EndpointOut:
        return EndpointOut.of(service.get(endpoint_id))

    @router.patch("/{endpoint_id}", response_model=EndpointOut)
    async def update_endpoint(endpoint_id: str, body: EndpointPatch) -> EndpointOut:
        changes = body.model_dump(exclude_unset=True)
        if "url" in changes:
            if changes["url"] is None:
                raise BadRequest("url may not be null")
            changes["url"] = str(body.url)
        for key in ("channels", "enabled", "ordered", "description"):
            if key in changes and changes[key] is None:
                raise BadRequest(f"{key} may not be null")
        return EndpointOut.of(await service.update(endpoint_id, **changes))

    @router.delete("/{endpoint_id}", status_code=204)
    async def delete_endpoint(endpoint_id: str) -> Response:
        await service.delete(endpoint_id)
        return Response(status_code=204)

    @router.post("/{endpoint_id}/rotate-secret", response_model=EndpointOut)
    async def rotate_secret(endpoint_id: str, body: RotateIn | None = None) -> EndpointOut:
        endpoint = await service.rotate(endpoint_id, grace=body.grace if body else None)
        return EndpointOut.of(endpoint, with_secret=True)

    @router.get("/{endpoint_id}/deliveries", response_model=DeliveryList)
    async def list_deliveries(
        endpoint_id: str,
        status: Literal["pending", "succeeded", "failed"] | None = None,
        limit: int = Query(100, ge=1, le=1000),
        since: float | None = Query(None, description="Created at or after (Unix seconds)."),
    ) -> DeliveryList:
        found = await service.deliveries(endpoint_id, status, limit, since)
        return DeliveryList(deliveries=[DeliveryOut.of(d) for d in found])

    @router.get("/{endpoint_id}/deliveries/{delivery_id}", response_model=DeliveryDetail)
    async def get_delivery(endpoint_id: str, delivery_id: str) -> DeliveryDetail:
        return DeliveryDetail.of(await service.delivery(endpoint_id, delivery_id))

    @router.post("/{endpoint_id}/replay", response_model=ReplayOut)
    async def replay(endpoint_id: str, body: ReplayIn) -> ReplayOut:
        since = body.since.timestamp() if isinstance(body.since, datetime) else body.since
        count = await service.replay(endpoint_id, delivery_id=body.delivery_id, since=since)
        return ReplayOut(replayed=count)

    @router.post("/{endpoint_id}/test", status_code=202, response_model=TestOut)
    async def send_test(endpoint_id: str) -> TestOut:
        due = await service.send_test(endpoint_id)
        delivery = await service.delivery(endpoint_id, due.delivery_id)
        return TestOut(delivery_id=due.delivery_id, webhook_id=delivery.webhook_id)

    return router
