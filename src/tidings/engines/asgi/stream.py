"""``GET /sse`` and ``GET /stream`` on the ASGI engine: one writer loop per stream."""

from __future__ import annotations

import asyncio
import contextlib

from tidings.core.disconnect import CloseCode, disconnect
from tidings.core.events import Gap
from tidings.core.position import Position
from tidings.core.wire.frames import EncodedPublication
from tidings.engines.asgi.endpoint import Endpoint
from tidings.exceptions import TidingsError
from tidings.node import Node
from tidings.outbox import Outbox
from tidings.transports.http_common import (
    STREAM_HEADERS,
    Framing,
    Heartbeat,
    Receive,
    Send,
    StreamRequest,
    StreamSubscriber,
    answer_error,
    close_timeout,
    end_timers,
)
from tidings.transports.http_stream import NDJSONFraming
from tidings.transports.sse import SSEFraming

__all__ = ["SSEEndpoint", "StreamEndpoint", "StreamSink", "serve_stream", "watch_disconnect"]


class StreamSink:
    """Frames everything into a bounded outbox that the stream's writer drains.

    Until :attr:`live` is set, what the subscription produces (the ``ready`` notice, gaps, a
    resume's replay) is pushed as allowed by the :class:`~tidings.outbox.Backlog` rule: the fast
    engine likewise allows everything it holds until the response head is out.
    """

    __slots__ = ("framing", "live", "outbox", "preamble")

    def __init__(self, framing: Framing, outbox: Outbox[bytes], preamble: bytes) -> None:
        self.framing = framing
        self.outbox = outbox
        self.preamble = preamble
        self.live = False

    def ready(self, positions: dict[str, Position], cursor: str) -> None:
        self.outbox.push(self.preamble + self.framing.ready(positions, cursor), bounded=self.live)

    def gap(self, gap: Gap, cursor: str) -> None:
        self.outbox.push(self.framing.gap(gap, cursor), bounded=self.live)

    def publication(self, encoded: EncodedPublication, cursor: str, single: bool) -> None:
        self.outbox.push(self.framing.publication(encoded, cursor, single), bounded=self.live)




async def watch_disconnect(receive: Receive, stream: StreamSubscriber) -> None:
    """Notice the client going away even while nothing is written (servers drop late writes)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            stream.gone = True
            stream.disconnect(disconnect(CloseCode.GOING_AWAY, "client went away"))
            return




async def _write(send: Send, outbox: Outbox[bytes], heartbeat: Heartbeat,
                 sending: list[bool]) -> None:
    while True:
        batch = await outbox.wait_batch()
        if not batch:
            return
        body = batch[0] if len(batch) == 1 else b"".join(batch)
        sending[0] = True
        try:
            await send({"type": "http.response.body", "body": body, "more_body": True})
        finally:
            sending[0] = False
        heartbeat.wrote = True


async def serve_stream(node: Node, request: StreamRequest, receive: Receive, send: Send,
                       framing: Framing, transport: str) -> None:
    """Run one SSE or NDJSON stream until the client leaves or the server ends it."""
    settings = node.settings
    outbox: Outbox[bytes] = Outbox(settings.limits.outbox_bytes)
    sink = StreamSink(framing, outbox, framing.preamble(settings))
    stream = StreamSubscriber(node, request, transport, sink)
    def overflow() -> None:
        node.metrics.outbox_overflow(transport)
        stream.disconnect(disconnect(CloseCode.SLOW_CONSUMER))

    outbox.on_overflow = overflow
    stream.on_end.append(outbox.close)
    # A client that stops reading fills its socket and a write then waits for ever: ending the
    # stream (overflow, disconnect, time limit) interrupts that write, so the request ends and
    # the subscriber leaves the node instead of lingering.
    sending = [False]
    task = asyncio.current_task()

    def interrupt() -> None:
        if sending[0] and task is not None:
            task.cancel()

    stream.on_end.append(interrupt)
    try:
        await stream.start()
    except TidingsError as exc:
        await answer_error(send, exc, request.cors)
        return
    sink.live = True
    headers = [(b"content-type", framing.content_type), *STREAM_HEADERS, *request.cors]
    loop = asyncio.get_running_loop()
    watcher = loop.create_task(watch_disconnect(receive, stream))
    timers = end_timers(stream, settings)

    def beat() -> None:
        outbox.push(framing.heartbeat)

    heartbeat = Heartbeat(loop, settings.sse.heartbeat, beat)

    async def leave() -> None:
        heartbeat.cancel()
        for timer in timers:
            timer.cancel()
        watcher.cancel()
        outbox.close()
        await stream.close()

    try:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        try:
            await _write(send, outbox, heartbeat, sending)
        except asyncio.CancelledError:
            if stream.closing is None or task is None:
                raise
            task.uncancel()  # interrupted: what the client could not take is dropped
        if not stream.gone:
            reason = stream.closing
            await leave()  # before waiting on a client that may not read
            # uvicorn writes a body once the socket has drained: the farewell goes out behind
            # what the socket holds if the client reads it in time, else the client is cut
            last = framing.farewell(reason) if reason is not None else b""
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(close_timeout(settings)):
                    await send({"type": "http.response.body", "body": last, "more_body": False})
    except OSError:
        pass  # the client went away mid-write
    finally:
        await leave()




class SSEEndpoint(Endpoint):
    """The ASGI endpoint of ``/sse``."""

    transport = "sse"
    last_event_id = True
    framing = SSEFraming()

    async def serve(self, request: StreamRequest, receive: Receive, send: Send) -> None:
        await serve_stream(self.node, request, receive, send, self.framing, self.transport)


class StreamEndpoint(Endpoint):
    """The ASGI endpoint of ``/stream``."""

    transport = "stream"
    framing = NDJSONFraming()

    async def serve(self, request: StreamRequest, receive: Receive, send: Send) -> None:
        await serve_stream(self.node, request, receive, send, self.framing, self.transport)
