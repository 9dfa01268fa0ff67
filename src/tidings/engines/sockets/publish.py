"""``POST /api/publish`` on the fast server: the API's busiest call, without the ASGI stack.

The request is checked here with the API's own parts (the API key by
:meth:`~tidings.auth.security.Security.check_api`, the body by the API's ``PublishIn`` model,
the channel and event names), and published by the API's own ``_publish_one``, so the answer is
the one the API gives. Anything that would not be a plain success (no or a wrong API key, a
body that does not validate, no ``Content-Length``, a body over ``limits.max_request_bytes``, a
content type other than JSON, HTTP/1.0, a browser's ``Origin``) is not answered here: the
connection, with every byte read so far, goes to the ASGI app, which refuses it exactly as it
refuses any other request. Nothing has happened by then, so nothing happens twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from tidings.core.channels import validate_channel
from tidings.core.commands import validate_event_name
from tidings.engines.sockets.exchange import HttpExchange, request_scope
from tidings.engines.sockets.http import RequestHead
from tidings.exceptions import TidingsError
from tidings.transports.http_common import answer, answer_error
from tidings.transports.publish import PublishIn
from tidings.transports.publish import publish_one as _publish_one

if TYPE_CHECKING:
    from tidings.engines.sockets.protocol import FastContext

__all__ = ["PUBLISH_ROUTE", "FastPublish", "publish_length", "serve_publish"]

PUBLISH_ROUTE = b"POST /api/publish"


def publish_length(head: RequestHead, most: int) -> int | None:
    """The body's length if the fast path may take this request, else None (the ASGI app's)."""
    headers = head.headers
    length = headers.get("content-length", "")
    if (
        head.path != "/api/publish"
        or head.version != "1.1"
        or not length.isdigit()
        or len(length) > 9
        or "transfer-encoding" in headers
        or "origin" in headers
        or "expect" in headers
    ):
        return None
    content_type = headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type != "application/json" or int(length) > most:
        return None
    return int(length)


def serve_publish(
    ctx: FastContext,
    transport: asyncio.Transport | None,
    head: RequestHead,
    body: bytes,
    rest: bytes,
    detach: Callable[[], asyncio.Transport],
) -> bool:
    """Take a complete publish request if it passes every check; False: the ASGI app's."""
    node = ctx.node
    assert node is not None and transport is not None
    scope = request_scope(head, transport)
    try:
        node.security.check_api(scope, "publish")
        request = PublishIn.model_validate_json(body)
        validate_channel(request.channel)
        validate_event_name(request.event)
    except (TidingsError, ValidationError):
        return False
    ctx.spawn(FastPublish(ctx, detach(), head, rest, scope, request).run())
    return True


class FastPublish(HttpExchange):
    """One publish: the node's publish, then the API's answer."""

    __slots__ = ("_request",)

    def __init__(
        self,
        ctx: FastContext,
        transport: asyncio.Transport,
        head: RequestHead,
        rest: bytes,
        scope: dict[str, Any],
        request: PublishIn,
    ) -> None:
        super().__init__(ctx, transport, head, rest, scope)
        self._request = request

    async def serve(self) -> None:
        request = self._request
        try:
            out = await _publish_one(self.node, request.channel, request)
        except TidingsError as exc:  # the broker is down, the history full …
            await answer_error(self.send, exc, [])
        else:
            await answer(self.send, 200, out.model_dump_json().encode(), [])
        self.complete()
