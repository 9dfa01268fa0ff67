"""``GET /sse`` and ``GET /stream`` on the owned-socket engine: a driver of
:class:`~tidings.machines.stream.StreamMachine` writing chunks on the socket it owns.

The machine holds every rule (heartbeats, the slow-consumer rule and its replay allowance, the
farewells, the time limits, the close timeout); this module writes its bytes as HTTP chunks,
reports the transport's write buffer after each write, and keeps its one timer. Inherent to this
engine (``server.coalesce_writes``): what a loop iteration produces goes out as one chunk, at the
end of the iteration (the ASGI engine hands it over at its writer's next turn).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from tidings.core.events import Gap
from tidings.core.position import Position
from tidings.core.wire.frames import EncodedPublication
from tidings.engines.sockets.exchange import PushExchange
from tidings.engines.sockets.http import RequestHead, response_head
from tidings.engines.transport import cut
from tidings.exceptions import TidingsError
from tidings.logs import request_id
from tidings.machines.stream import StreamMachine
from tidings.transports.http_common import (
    STREAM_HEADERS,
    StreamRequest,
    StreamSubscriber,
    answer_error,
    stream_coding,
    stream_config,
)
from tidings.transports.http_stream import NDJSONFraming
from tidings.transports.sse import SSEFraming

if TYPE_CHECKING:
    from tidings.engines.sockets.protocol import FastContext
    from tidings.machines.stream import Framing
    from tidings.settings import Settings


__all__ = ["FastNDJSON", "FastSSE", "FastStream"]

LAST_CHUNK = b"0\r\n\r\n"


class FastStream(PushExchange):
    """``GET /sse`` and ``GET /stream`` on the owned sockets: the subscriber's :class:`Sink`.

    What the subscription produces before the response head is out (the ready notice, gaps, a
    resume's replay) waits in the machine and is written right after the head.
    """

    __slots__ = ("_finished", "_live", "_m", "_stream", "_timer")

    _m: StreamMachine  # made with the subscriber, in serve_request

    def __init__(
        self, ctx: FastContext, transport: asyncio.Transport, head: RequestHead, rest: bytes
    ) -> None:
        super().__init__(ctx, transport, head, rest)
        self._stream: StreamSubscriber | None = None
        self._live = False  # the head is out
        self._finished = False
        self._timer: asyncio.TimerHandle | None = None

    def framing(self, settings: Settings) -> Framing:
        raise NotImplementedError

    async def serve_request(self, request: StreamRequest) -> None:
        settings = self.node.settings
        framing = self.framing(settings)
        coding, coding_headers = stream_coding(settings, request)
        # what the machine holds is written by the end of the loop iteration that produced it:
        # the backlog is the transport's buffer, as for this engine's WebSockets
        config = stream_config(settings, count_pending=False)
        machine = self._m = StreamMachine(config, framing, coding)
        stream = self._stream = StreamSubscriber(self.node, request, self.transport_name, self)
        stream.info = machine.close_info
        stream.on_end.append(self._ended_by_server)
        self.on_lost = self._gone
        try:
            await stream.start()
        except TidingsError as exc:
            self.on_lost = None
            await answer_error(self.send, exc, request.cors)
            self.complete()
            return
        self._started = True
        self._status = 200
        if self._lost:  # the client left while the subscriptions were being made
            self._ctx.spawn(self._close())
            return
        expires = request.credentials.expires_at
        machine.open(self._ctx.loop.time(), None if expires is None else expires - time.time())
        headers = [
            (b"content-type", framing.content_type),
            *STREAM_HEADERS,
            *coding_headers,
            *request.cors,
            (b"x-request-id", self._rid.encode()),
        ]
        self._t.write(response_head(200, headers, chunked=True, keep_alive=self._keep_alive))
        self._live = True
        self._arm()
        self.flush()

    # the Sink: what the subscription produces, in order ----------------------------------------

    def ready(self, positions: dict[str, Position], cursor: str) -> None:
        if self._m.ready(positions, cursor):
            self._wake()

    def gap(self, gap: Gap, cursor: str) -> None:
        if self._m.gap(gap, cursor):
            self._wake()

    def publication(self, encoded: EncodedPublication, cursor: str, single: bool) -> None:
        # the hot path, once per publication and stream: _wake inlined
        if self._m.publication(encoded, cursor, single) and self._live:
            ctx = self._ctx
            if ctx.coalesce:
                ctx.mark_dirty(self)
            else:
                self.flush()

    # writing -----------------------------------------------------------------------------------

    def _wake(self) -> None:
        if not self._live:
            return  # serve_request flushes once the head is out
        if self._ctx.coalesce:
            self._ctx.mark_dirty(self)
        else:
            self.flush()

    def flush(self) -> None:
        """Write what the machine holds as one chunk (the context calls it once per iteration),
        or the farewell."""
        if self._finished or not self._live:
            return
        machine = self._m
        data = machine.data_to_send()
        if data and not self._lost:
            transport = self._t
            transport.writelines((b"%x\r\n" % len(data), data, b"\r\n"))
            over = machine.written(transport.get_write_buffer_size())  # ending or ended
        else:
            over = machine.ending or machine.ended
        if over:
            self._finish()

    def _finish(self) -> None:
        self._finished = True
        machine = self._m
        if machine.overflowed:
            self.node.metrics.outbox_overflow(self.transport_name)
        if machine.ending:
            last = machine.farewell(self._ctx.loop.time())
            if not self._lost:
                self._t.writelines((b"%x\r\n" % len(last), last, b"\r\n", LAST_CHUNK))
                machine.written(self._t.get_write_buffer_size())
            if machine.deadline is not None:
                self._keep_alive = False  # the connection may be cut: never reused
            self._arm()
        self._ctx.spawn(self._close())

    # timers and ends ---------------------------------------------------------------------------

    def _arm(self) -> None:
        """Keep the one timer on the machine's deadline."""
        if self._timer is not None:
            self._timer.cancel()
        deadline = self._m.deadline
        self._timer = None if deadline is None else self._ctx.loop.call_at(deadline, self._tick)

    def _tick(self) -> None:
        self._timer = None
        machine = self._m
        machine.tick(self._ctx.loop.time())
        if machine.abort:  # the farewell was not taken in time
            cut(self._t)
            return
        self._arm()
        self.flush()

    def _ended_by_server(self) -> None:
        stream = self._stream
        assert stream is not None and stream.closing is not None
        if self._m.disconnect(stream.closing):
            self._wake()

    def _gone(self) -> None:
        self._m.peer_gone()
        self._wake()

    async def _close(self) -> None:
        request_id.set(self._rid)
        if self._m.deadline is None and self._timer is not None:
            self._timer.cancel()
        self.on_lost = None
        stream = self._stream
        if stream is not None:
            await stream.close()
        self.complete()

    def shutdown(self) -> None:
        super().shutdown()
        if self._stream is not None and self._m.drain():
            self._wake()


class FastSSE(FastStream):
    __slots__ = ()
    transport_name = "sse"
    last_event_id = True

    def framing(self, settings: Settings) -> Framing:
        return SSEFraming(settings.sse.retry_ms)


class FastNDJSON(FastStream):
    __slots__ = ()
    transport_name = "stream"

    def framing(self, settings: Settings) -> Framing:
        return _NDJSON


_NDJSON = NDJSONFraming()
