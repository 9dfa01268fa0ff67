"""``POST /api/publish``, the part both engines serve: the request and answer models and the
publish itself.

The server API (:mod:`tidings.server.api`) routes it through FastAPI; the owned-socket engine
answers the plain requests itself, with these same models and this same call, so both give the
same answer.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tidings.brokers.base import PublishResult
from tidings.node import Node

__all__ = ["PublishIn", "PublishOut", "publish_one", "publish_out"]


class PublishIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: str = Field(description="Channel name.")
    data: Any = Field(description="Any JSON value.")
    event: str = Field("message", description="Event type (SSE event name).")
    idempotency_key: str | None = Field(
        None, max_length=200, description="Publishing twice with one key publishes once."
    )


class PublishOut(BaseModel):
    channel: str
    offset: int
    epoch: str
    id: str
    duplicate: bool = False


def publish_out(result: PublishResult) -> PublishOut:
    pub = result.publication
    return PublishOut(
        channel=pub.channel, offset=pub.offset, epoch=pub.epoch, id=pub.id, duplicate=result.duplicate
    )


async def publish_one(node: Node, channel: str, body: PublishIn) -> PublishOut:
    return publish_out(
        await node.publish(channel, body.data, event=body.event, idempotency_key=body.idempotency_key)
    )
