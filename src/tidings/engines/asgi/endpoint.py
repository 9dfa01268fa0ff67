"""The base of the ASGI endpoints of the HTTP push transports."""

from __future__ import annotations

from tidings.node import Node
from tidings.transports.http_common import (
    Receive,
    Scope,
    Send,
    StreamRequest,
    answer,
    checked_request,
    header_map,
    preflight,
)

__all__ = ["Endpoint"]


class Endpoint:
    """Base of the raw ASGI endpoints: method dispatch, CORS preflight, draining, errors.

    Subclasses implement :meth:`serve` for a validated GET; a TidingsError raised before the
    response starts is answered as ``{"error": …}`` with its status.
    """

    transport = "http"
    poll = False
    last_event_id = False

    def __init__(self, node: Node) -> None:
        self.node = node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = header_map(scope)
        if scope.get("method", "GET") == "OPTIONS":
            status, preflight_headers = preflight(self.node, headers)
            await answer(send, status, b"", preflight_headers)
            return
        request = await checked_request(
            self.node, scope, headers, send, poll=self.poll, last_event_id=self.last_event_id
        )
        if request is not None:
            try:
                await self.serve(request, receive, send)
            finally:
                request.release()

    async def serve(self, request: StreamRequest, receive: Receive, send: Send) -> None:
        raise NotImplementedError
