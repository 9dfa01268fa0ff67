"""The HTTP push transports on the fast server: ``GET /sse``, ``/stream`` and ``/poll``.

The same endpoints as :mod:`tidings.transports.sse`, :mod:`~tidings.transports.http_stream` and
:mod:`~tidings.transports.long_poll` (request parsing, CORS, the streaming subscriber, framing,
the poll answers are all shared with them), answered on the socket the fast server owns instead
of through uvicorn's HTTP protocol and the ASGI stack:

- a stream (:class:`FastStream`) is the hub subscriber's sink itself: each publication's
  pre-encoded event (``EncodedPublication.sse`` / ``.ndjson``, the same bytes for every stream of
  the channel) is appended to the connection's pending list and written once per loop iteration
  as one HTTP chunk, exactly like WebSocket frames (:class:`~.protocol.FrameConnection`). No task,
  queue or ASGI message exists per publication or per idle stream; the transport's write buffer
  is the outbox (past ``limits.outbox_bytes`` the stream ends as a slow consumer);
- a long poll (:class:`FastPoll`) is held by a callback and a timer, no task, and answered with
  one write; a short poll is answered at once.

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

from tidings.core.disconnect import CloseCode, disconnect
from tidings.core.events import Gap
from tidings.core.position import Position
from tidings.core.wire.frames import EncodedPublication
from tidings.exceptions import TidingsError
from tidings.logs import access_level, access_log, log_event, request_id, request_id_for
from tidings.node import Node
from tidings.outbox import Backlog
from tidings.server.errors import error_body
from tidings.server.fast.http import Headers, RequestHead, response_head
from tidings.transports.http_common import (
    STREAM_HEADERS,
    Framing,
    Heartbeat,
    StreamRequest,
    StreamSubscriber,
    answer,
    answer_error,
    checked_request,
    end_timers,
)
from tidings.transports.http_stream import NDJSONFraming
from tidings.transports.long_poll import POLL_HEADERS, PollSink, serve_short_poll
from tidings.transports.sse import SSEFraming

if TYPE_CHECKING:
    from tidings.server.fast.protocol import FastContext

__all__ = ["HTTP_ROUTES", "FastNDJSON", "FastPoll", "FastSSE", "FastStream", "HttpExchange",
           "PushExchange", "owned", "request_scope", "serve_http"]

log = logging.getLogger("tidings.fast")

HTTP_ROUTES = (b"/sse", b"/stream", b"/poll")
MAX_PIPELINED = 64 * 1024  # bytes of a next request read while this one is answered
LAST_CHUNK = b"0\r\n\r\n"


def owned(head: RequestHead) -> bool:
    """Whether the fast path answers this request (else the ASGI app does)."""
    return (head.path.encode("latin-1") in HTTP_ROUTES and head.version == "1.1"
            and not head.upgrade and head.headers.get("content-length", "0") == "0"
            and "transfer-encoding" not in head.headers)


def serve_http(ctx: FastContext, transport: asyncio.Transport, head: RequestHead,
               rest: bytes) -> None:
    """Answer an :func:`owned` request on ``transport`` (``rest``: bytes read after its head)."""
    kind = FastSSE if head.path == "/sse" else FastNDJSON if head.path == "/stream" else FastPoll
    ctx.spawn(kind(ctx, transport, head, rest).run())


def request_scope(head: RequestHead, transport: asyncio.Transport) -> dict[str, Any]:
    """The ASGI-shaped scope of an owned request, for the helpers shared with the ASGI path."""
    peer = transport.get_extra_info("peername")
    return {"type": "http", "method": head.method, "path": head.path, "query_string": head.query,
            "headers": head.raw_headers, "client": tuple(peer[:2]) if peer else None}


class HttpExchange(asyncio.Protocol):
    """One owned request, from its head until its answer is complete.

    :meth:`run` (a task) calls :meth:`serve`, which subclasses implement; an unexpected error
    is answered 500. :meth:`send` takes the ASGI messages of the shared answer helpers and
    writes them as one response; :meth:`complete` hands the connection back for its next request.
    """

    __slots__ = ("_completed", "_ctx", "_head", "_headers_out", "_keep_alive", "_lost", "_rest",
                 "_rid", "_scope", "_started", "_status", "_t", "_when", "on_lost")

    def __init__(self, ctx: FastContext, transport: asyncio.Transport, head: RequestHead,
                 rest: bytes, scope: dict[str, Any] | None = None) -> None:
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
        ctx.server_state.connections.add(self)  # type: ignore[arg-type]

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
        ctx.server_state.connections.discard(self)
        level = access_level(self.node.settings.access_log, self._head.path)
        if level is not None:
            path = self._head.path
            query = self._head.query.decode("latin-1")
            log_event(access_log, "request", level, method=self._head.method,
                      path=path + (f"?{query}" if query else ""), status=self._status or None,
                      duration_ms=round((time.monotonic() - self._when) * 1000, 1),
                      client=self.node.security.client_ip(self._scope))
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
        self._ctx.server_state.connections.discard(self)
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

    def __init__(self, ctx: FastContext, transport: asyncio.Transport, head: RequestHead,
                 rest: bytes) -> None:
        super().__init__(ctx, transport, head, rest)
        self._request: StreamRequest | None = None

    async def serve(self) -> None:
        request = await checked_request(self.node, self._scope, self._head.headers, self.send,
                                        poll=self.poll, last_event_id=self.last_event_id)
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


class FastPoll(PushExchange):
    """``GET /poll`` on the fast path. A long poll is held by no task: once subscribed, the
    sink's news (a publication, a gap, the end of the subscription), its timer or the client
    leaving calls :meth:`_answer`, which leaves the hub and writes the answer in one go."""

    __slots__ = ("_poll", "_timer")

    transport_name = "longpoll"
    poll = True

    def __init__(self, ctx: FastContext, transport: asyncio.Transport, head: RequestHead,
                 rest: bytes) -> None:
        super().__init__(ctx, transport, head, rest)
        self._poll: tuple[StreamSubscriber, PollSink, StreamRequest] | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def serve_request(self, request: StreamRequest) -> None:
        if request.timeout <= 0:
            await serve_short_poll(self.node, request, self.send)
            self.complete()
            return
        sink = PollSink(request.limit)
        stream = StreamSubscriber(self.node, request, "longpoll", sink)
        stream.on_end.append(sink.wake)
        try:
            await stream.start()
        except TidingsError as exc:
            await answer_error(self.send, exc, request.cors)
            self.complete()
            return
        self._poll = (stream, sink, request)
        if sink.news.done() or self._lost:
            self._answer()
            return
        sink.on_news = self._answer
        self._timer = self._ctx.loop.call_later(request.timeout, sink.wake)
        self.on_lost = sink.wake

    def _answer(self) -> None:
        poll, self._poll = self._poll, None
        if poll is None:
            return
        stream, sink, request = poll
        if self._timer is not None:
            self._timer.cancel()
        self.on_lost = None
        stream.close_now()
        body = sink.body()
        self.respond(200, [(b"content-type", b"application/json"),
                           (b"content-length", b"%d" % len(body)), *POLL_HEADERS, *request.cors],
                     body)
        self.complete()


class FastStream(PushExchange):
    """``GET /sse`` and ``GET /stream`` on the fast path: the subscriber's :class:`Sink`.

    What the subscription produces before the response head is out (the ready notice, gaps, a
    resume's replay) is held and written right after the head, allowed by the
    :class:`~tidings.outbox.Backlog` rule (a replay is bounded by the channel's history).
    """

    __slots__ = ("_backlog", "_ended", "_heartbeat", "_pending", "_preamble", "_stream",
                 "_timers")

    framing: Framing

    def __init__(self, ctx: FastContext, transport: asyncio.Transport, head: RequestHead,
                 rest: bytes) -> None:
        super().__init__(ctx, transport, head, rest)
        self._pending: list[bytes] | None = []  # held until the head is out
        self._preamble = b""
        self._stream: StreamSubscriber | None = None
        self._ended = False
        self._backlog = Backlog(ctx.outbox_bytes)
        self._heartbeat: Heartbeat | None = None
        self._timers: list[asyncio.TimerHandle] = []

    async def serve_request(self, request: StreamRequest) -> None:
        node = self.node
        settings = node.settings
        self._preamble = self.framing.preamble(settings)
        stream = self._stream = StreamSubscriber(node, request, self.transport_name, self)
        stream.on_end.append(self._end)
        self.on_lost = self._gone
        try:
            await stream.start()
        except TidingsError as exc:
            self.on_lost = None
            self._pending = None
            await answer_error(self.send, exc, request.cors)
            self.complete()
            return
        held, self._pending = self._pending or [], None
        self._started = True
        self._status = 200
        if self._lost:  # the client left while the subscriptions were being made
            self._ctx.spawn(self._close())
            return
        headers = [(b"content-type", self.framing.content_type), *STREAM_HEADERS, *request.cors,
                   (b"x-request-id", self._rid.encode())]
        self._t.write(response_head(200, headers, chunked=True, keep_alive=self._keep_alive))
        self._heartbeat = Heartbeat(self._ctx.loop, settings.sse.heartbeat, self._beat)
        if held:
            body = b"".join(held)
            self._backlog.allow(len(body))
            self._write(body)
        if self._ended:  # gone, or overflowed, at once
            return
        if stream.closing is not None:  # ended while subscribing (a drain)
            self._end()
            return
        self._timers = end_timers(stream, settings)

    # the Sink: what the subscription produces, in order ----------------------------------------

    def ready(self, positions: dict[str, Position], cursor: str) -> None:
        self._send(self._preamble + self.framing.ready(positions, cursor))

    def gap(self, gap: Gap, cursor: str) -> None:
        self._send(self.framing.gap(gap, cursor))

    def publication(self, encoded: EncodedPublication, cursor: str, single: bool) -> None:
        self._send(self.framing.publication(encoded, cursor, single))

    # writing -----------------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        if self._ended:
            return
        pending = self._pending
        if pending is not None:
            pending.append(data)
        elif not self._ctx.coalesce:
            self._write(data)
        else:
            self._pending = [data]
            self._ctx.mark_dirty(self)

    def flush(self) -> None:
        """Write the pending events as one chunk (the context calls it once per iteration)."""
        pending = self._pending
        if pending is None or not self._started:
            return
        self._pending = None
        self._write(pending[0] if len(pending) == 1 else b"".join(pending))

    def _write(self, data: bytes) -> None:
        if self._lost:
            return
        self._t.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
        heartbeat = self._heartbeat
        if heartbeat is not None:
            heartbeat.wrote = True
        if self._backlog.overflows(self._t.get_write_buffer_size()):
            assert self._stream is not None
            self.node.metrics.outbox_overflow(self.transport_name)
            self._stream.disconnect(disconnect(CloseCode.SLOW_CONSUMER))

    def _beat(self) -> None:
        self._send(self.framing.heartbeat)

    # ending ------------------------------------------------------------------------------------

    def _gone(self) -> None:
        if self._stream is not None:
            self._stream.gone = True
            self._stream.disconnect(disconnect(CloseCode.GOING_AWAY, "client went away"))

    def _end(self) -> None:
        """The stream ends (client gone, server's disconnect, overflow, time limit, drain)."""
        if self._ended or not self._started:  # still subscribing: serve() ends it after the head
            return
        self._ended = True
        stream = self._stream
        assert stream is not None
        reason = stream.closing
        if not (self._lost or stream.gone):
            pending = self._pending or []
            self._pending = None
            if reason is not None and reason.code == CloseCode.SLOW_CONSUMER:
                # what the client could not take is dropped; the farewell waits behind what
                # the socket holds, and the connection is cut if it is not read in time
                pending = []
                self._keep_alive = False
                self._ctx.loop.call_later(self._ctx.close_timeout, self._t.abort)
            if reason is not None:
                pending.append(self.framing.farewell(reason))
            body = b"".join(pending)
            self._t.writelines((b"%x\r\n" % len(body), body, b"\r\n", LAST_CHUNK) if body
                               else (LAST_CHUNK,))
        self._ctx.spawn(self._close())

    async def _close(self) -> None:
        request_id.set(self._rid)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        for timer in self._timers:
            timer.cancel()
        self.on_lost = None
        stream = self._stream
        if stream is not None:
            await stream.close()
        self.complete()

    def shutdown(self) -> None:
        super().shutdown()
        if self._stream is not None:
            self._stream.disconnect(disconnect(CloseCode.SERVICE_RESTART))


class FastSSE(FastStream):
    __slots__ = ()
    transport_name = "sse"
    last_event_id = True
    framing = SSEFraming()


class FastNDJSON(FastStream):
    __slots__ = ()
    transport_name = "stream"
    framing = NDJSONFraming()
