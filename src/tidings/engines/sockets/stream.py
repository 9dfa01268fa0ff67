"""``GET /sse`` and ``GET /stream`` on the owned-socket engine: chunked streams written from the
subscriber's sink."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from tidings.core.disconnect import CloseCode, disconnect
from tidings.core.events import Gap
from tidings.core.position import Position
from tidings.core.wire.frames import EncodedPublication
from tidings.engines.sockets.exchange import PushExchange
from tidings.engines.sockets.http import RequestHead, response_head
from tidings.exceptions import TidingsError
from tidings.logs import request_id
from tidings.machines.backlog import Backlog
from tidings.transports.http_common import (
    STREAM_HEADERS,
    Framing,
    Heartbeat,
    StreamRequest,
    StreamSubscriber,
    answer_error,
    end_timers,
)
from tidings.transports.http_stream import NDJSONFraming
from tidings.transports.sse import SSEFraming

if TYPE_CHECKING:
    from tidings.engines.sockets.protocol import FastContext


log = logging.getLogger("tidings.fast")


__all__ = ["FastNDJSON", "FastSSE", "FastStream"]

LAST_CHUNK = b"0\r\n\r\n"


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
