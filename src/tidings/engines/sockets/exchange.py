"""One HTTP exchange on a socket the owned-socket engine owns: a ``GET /sse``, ``/stream`` or
``/poll`` answered there rather than through uvicorn's HTTP protocol and the ASGI stack
(:class:`PushExchange`, which :mod:`.stream` and :mod:`.poll` build on). Request parsing, CORS,
the streaming subscriber, the framings and the poll answers are the ASGI engine's too
(:mod:`tidings.transports`); the rules are the machines' (:mod:`tidings.machines`).

When the answer is complete the connection goes back to a :class:`~.protocol.FastProtocol`
(HTTP keep-alive), which reads the next request. Only HTTP/1.1 GETs without a body come here;
anything else on these paths (OPTIONS preflights, HTTP/1.0, other methods) is the ASGI app's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tidings.core.wire.errors import error_body
from tidings.engines.sockets.http import Headers, RequestHead, response_head
from tidings.engines.uvicorn_internals import forget_connection, track_connection
from tidings.logs import access_level, access_log, log_event, request_id, request_id_for
from tidings.node import Node
from tidings.transports.http_common import (
    StreamRequest,
    answer,
    checked_request,
)

if TYPE_CHECKING:
    from tidings.engines.sockets.protocol import FastContext

__all__ = ["HTTP_ROUTES", "HttpExchange", "PushExchange", "owned", "request_scope"]

log = logging.getLogger("tidings.fast")

HTTP_ROUTES = (b"/sse", b"/stream", b"/poll")
MAX_PIPELINED = 64 * 1024  # bytes of a next request read while this one is answered
LAST_CHUNK = b"0\r\n\r\n"


def owned(head: RequestHead) -> bool:
    """Whether the fast path answers this request (else the ASGI app does)."""
    return (
        head.path.encode("latin-1") in HTTP_ROUTES
        and head.version == "1.1"
        and not head.upgrade
        and head.headers.get("content-length", "0") == "0"
        and "transfer-encoding" not in head.headers
    )


def request_scope(head: RequestHead, transport: asyncio.Transport) -> dict[str, Any]:
    """The ASGI-shaped scope of an owned request, for the helpers shared with the ASGI path."""
    peer = transport.get_extra_info("peername")
    return {
        "type": "http",
        "method": head.method,
        "path": head.path,
        "query_string": head.query,
        "headers": head.raw_headers,
        "client": tuple(peer[:2]) if peer else None,
    }


class HttpExchange(asyncio.Protocol):
    """One owned request, from its head until its answer is complete.

    :meth:`run` (a task) calls :meth:`serve`, which subclasses implement; an unexpected error
    is answered 500. :meth:`send` takes the ASGI messages of the shared answer helpers and
    writes them as one response; :meth:`complete` hands the connection back for its next request.
    """

    __slots__ = (
        "_completed",
        "_ctx",
        "_head",
        "_headers_out",
        "_keep_alive",
        "_lost",
        "_rest",
        "_rid",
        "_scope",
        "_started",
        "_status",
        "_t",
        "_when",
        "on_lost",
    )

    def __init__(
        self,
        ctx: FastContext,
        transport: asyncio.Transport,
        head: RequestHead,
        rest: bytes,
        scope: dict[str, Any] | None = None,
    ) -> None:
        self._ctx = ctx
        self._t = transport
        self._head = head
        self._rest = rest
        self._keep_alive = head.keep_alive
        self._lost = False
        self._started = False
        self._completed = False
        self._status = 0
        self._headers_out: Headers = []
        self._when = time.monotonic()
        self._rid = request_id_for(head.headers.get("x-request-id"))
        self._scope = scope if scope is not None else request_scope(head, transport)
        self.on_lost: Any = None  # called once if the client goes away mid-answer
        transport.set_protocol(self)
        track_connection(ctx.server_state, self)

    @property
    def node(self) -> Node:
        node = self._ctx.node
        assert node is not None
        return node

    async def run(self) -> None:
        request_id.set(self._rid)  # this task's context only
        try:
            await self.serve()
        except Exception:
            log.exception("answering %s %s failed", self._head.method, self._head.path)
            if not self._started and not self._lost:
                self._keep_alive = False
                await answer(self.send, 500, error_body("internal", "internal error"), [])
            self.complete()

    async def serve(self) -> None:
        raise NotImplementedError

    # answering ---------------------------------------------------------------------------------

    async def send(self, message: Mapping[str, Any]) -> None:
        """ASGI ``send`` for :func:`~tidings.transports.http_common.answer`: start, then one body."""
        if message["type"] == "http.response.start":
            self._status = message["status"]
            self._headers_out = list(message.get("headers", ()))
            return
        self.respond(self._status, self._headers_out, message.get("body", b""))

    def respond(self, status: int, headers: Headers, body: bytes) -> None:
        """Write a complete response; ``headers`` include its length (as :func:`answer` gives)."""
        self._status = status
        self._started = True
        if self._lost:
            return
        headers = [*headers, (b"x-request-id", self._rid.encode())]
        self._t.write(response_head(status, headers, keep_alive=self._keep_alive) + body)

    def complete(self) -> None:
        """The answer is out: log it, and read the next request on this connection (or close)."""
        if self._completed:
            return
        self._completed = True
        ctx = self._ctx
        forget_connection(ctx.server_state, self)
        level = access_level(self.node.settings.access_log, self._head.path)
        if level is not None:
            path = self._head.path
            query = self._head.query.decode("latin-1")
            log_event(
                access_log,
                "request",
                level,
                method=self._head.method,
                path=path + (f"?{query}" if query else ""),
                status=self._status or None,
                duration_ms=round((time.monotonic() - self._when) * 1000, 1),
                client=self.node.security.client_ip(self._scope),
            )
        if self._lost:
            return
        if not self._keep_alive:
            self._t.close()
            return
        ctx.reuse(self._t, self._rest)

    # the connection ----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        # the client's next request, sent before this answer ended (pipelining): kept for it
        self._rest += data
        if len(self._rest) > MAX_PIPELINED:
            self._t.pause_reading()

    def eof_received(self) -> bool | None:
        return None  # the client is gone: the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        forget_connection(self._ctx.server_state, self)
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: finish this answer, then close the connection."""
        self._keep_alive = False


class PushExchange(HttpExchange):
    """A request of an HTTP push transport, validated by
    :func:`~tidings.transports.http_common.checked_request` as on the ASGI path; subclasses
    answer a valid request in :meth:`serve_request`."""

    __slots__ = ("_request",)

    transport_name = "http"
    poll = False
    last_event_id = False

    def __init__(
        self, ctx: FastContext, transport: asyncio.Transport, head: RequestHead, rest: bytes
    ) -> None:
        super().__init__(ctx, transport, head, rest)
        self._request: StreamRequest | None = None

    async def serve(self) -> None:
        request = await checked_request(
            self.node,
            self._scope,
            self._head.headers,
            self.send,
            poll=self.poll,
            last_event_id=self.last_event_id,
        )
        if request is None:
            self.complete()
            return
        self._request = request
        await self.serve_request(request)

    def complete(self) -> None:
        if self._request is not None:  # the request no longer counts as a connection
            self._request.release()
        super().complete()

    async def serve_request(self, request: StreamRequest) -> None:
        raise NotImplementedError
