"""Inbound webhooks: ``POST /hooks/{name}`` for every ``[receivers.NAME]`` in the settings.

Order of checks (so nothing unverified is ever parsed or published)::

    unknown name               404
    body over the limit        413   (Content-Length first, then counted while reading)
    signature bad or missing   401   (the provider's scheme, chosen by ``provider``)
    stale timestamp            401   (stripe, standard: ``tolerance`` seconds)
    body not JSON              400
    delivery id seen           200   {"duplicate": true}, nothing published
    otherwise                  200   published to the channel template

The delivery id (``X-GitHub-Delivery``, the Stripe event's ``id``, ``webhook-id``, or the hmac
receiver's ``id_header``) is remembered in the webhook store for ``webhooks.inbound_dedup_ttl``
(3 days by default) and also given to the broker as the publication's idempotency key. A
publish that fails forgets the id again, so the provider's retry gets through.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from tidings.exceptions import BadRequest, NotFound, TidingsError, TooLarge
from tidings.node import Node
from tidings.settings import ReceiverSettings
from tidings.webhooks.signing import verify_github, verify_hmac, verify_standard, verify_stripe
from tidings.webhooks.store import WebhookStore

__all__ = ["Inbound", "ReceiverEndpoint", "read_body", "verify_inbound"]

_EVENT_SAFE = re.compile(r"[^A-Za-z0-9_.@/=-]")


@dataclass(frozen=True, slots=True)
class Inbound:
    """A verified inbound webhook."""

    delivery_id: str | None
    event: str
    data: Any


def _secrets(receiver: ReceiverSettings) -> list[str]:
    return [receiver.secret] if isinstance(receiver.secret, str) else list(receiver.secret)


def verify_inbound(
    receiver: ReceiverSettings, headers: Mapping[str, str], body: bytes, now: float
) -> Inbound:
    """Verify ``body`` per ``receiver.provider`` and extract the delivery id and event type.

    Raises Unauthorized (bad, missing or stale signature) or BadRequest (not JSON)."""
    secrets = _secrets(receiver)
    lowered = {k.lower(): v for k, v in headers.items()}
    delivery_id: str | None
    if receiver.provider == "github":
        verify_github(secrets, lowered, body)
        delivery_id = lowered.get("x-github-delivery")
        event = lowered.get("x-github-event", "")
    elif receiver.provider == "stripe":
        verify_stripe(secrets, lowered, body, now, receiver.tolerance)
        delivery_id = event = ""
    elif receiver.provider == "standard":
        delivery_id = verify_standard(secrets, lowered, body, now, receiver.tolerance)
        event = ""
    else:
        verify_hmac(secrets, lowered, body, receiver.header, receiver.algorithm)
        delivery_id = lowered.get(receiver.id_header.lower()) if receiver.id_header else None
        event = ""
    try:
        data = json.loads(body)  # not orjson: it reads integers past 64 bits as floats
    except ValueError:
        raise BadRequest("the body is not JSON") from None
    except RecursionError:  # Node.publish refuses what nests deeper than max_json_depth anyway
        raise BadRequest("the body nests too deep (limits.max_json_depth)") from None
    if receiver.event_header:
        event = lowered.get(receiver.event_header.lower(), event)
    if not event and isinstance(data, dict) and isinstance(data.get("type"), str):
        event = data["type"]
    if receiver.provider == "stripe":
        delivery_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(delivery_id, str) or not delivery_id:
            raise BadRequest("a Stripe event carries an id")
    event = _EVENT_SAFE.sub("_", event)[:64] or "webhook"
    return Inbound(delivery_id or None, event, data)


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing more than ``limit`` bytes with TooLarge."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _error(exc: TidingsError) -> JSONResponse:
    return JSONResponse(exc.to_dict(), status_code=exc.http_status)


class ReceiverEndpoint:
    """An ASGI app for ``POST /hooks/{name}`` (Starlette route with a ``name`` path param).

    Answers errors itself (the JSON error shape), so it works mounted anywhere."""

    def __init__(self, node: Node, store: WebhookStore, *, dedup_ttl: float) -> None:
        self.node = node
        self.store = store
        self.dedup_ttl = dedup_ttl

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        name = str(scope.get("path_params", {}).get("name", ""))
        try:
            response, outcome = await self.handle(request)
        except TidingsError as exc:
            response = _error(exc)
            outcome = "rejected" if exc.http_status in (401, 413) else exc.code
        self.node.metrics.inbound_webhook(name, outcome)
        await response(scope, receive, send)

    async def handle(self, request: Request) -> tuple[Response, str]:
        """The answer to one inbound webhook, and its outcome for the metrics."""
        name = str(request.path_params.get("name", ""))
        receiver = self.node.settings.receivers.get(name)
        if receiver is None:
            raise NotFound(f"no receiver {name!r}")
        body = await read_body(request, self.node.settings.limits.max_request_bytes)
        now = time.time()
        inbound = verify_inbound(receiver, request.headers, body, now)
        channel = receiver.channel.replace("{event}", inbound.event).replace("{name}", name)
        if inbound.delivery_id is not None and not await self.store.remember_inbound(
            name, inbound.delivery_id, now, self.dedup_ttl
        ):
            return JSONResponse({"duplicate": True, "delivery_id": inbound.delivery_id}), "duplicate"
        try:
            result = await self.node.publish(
                channel,
                inbound.data,
                event=inbound.event,
                idempotency_key=(f"hook:{name}:{inbound.delivery_id}" if inbound.delivery_id else None),
            )
        except BaseException:
            if inbound.delivery_id is not None:
                await self.store.forget_inbound(name, inbound.delivery_id)
            raise
        publication = result.publication
        return JSONResponse(
            {
                "channel": publication.channel,
                "offset": publication.offset,
                "epoch": publication.epoch,
                "id": publication.id,
                "duplicate": result.duplicate,
            }
        ), "accepted"
