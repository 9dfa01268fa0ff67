"""``GET /sse`` and ``GET /stream`` on the ASGI engine: a driver of
:class:`~tidings.machines.stream.StreamMachine`, one writer loop per stream.

The machine holds every rule (heartbeats, the slow-consumer rule and its replay allowance, the
farewells, the time limits, the close timeout); this module moves its bytes to ``send``, its
one timer to the loop and ``http.disconnect`` to it. What the machine produces while a ``send``
is under way is handed over as one body at the next (write coalescing by the writer loop).
"""

from __future__ import annotations

import asyncio
import time

from tidings.core.events import Gap
from tidings.core.position import Position
from tidings.core.wire.frames import EncodedPublication
from tidings.engines.asgi.endpoint import Endpoint
from tidings.exceptions import TidingsError
from tidings.machines.stream import StreamMachine
from tidings.node import Node
from tidings.transports.http_common import (
    STREAM_HEADERS,
    Framing,
    Receive,
    Send,
    StreamRequest,
    StreamSubscriber,
    answer_error,
    stream_coding,
    stream_config,
)
from tidings.transports.http_stream import NDJSONFraming
from tidings.transports.sse import SSEFraming

__all__ = ["SSEEndpoint", "StreamEndpoint", "serve_stream"]


class _Driver:
    """The subscriber's sink and the I/O of one stream: wakes the writer, runs the timer."""

    __slots__ = ("_loop", "_timer", "machine", "sending", "task", "waiter")

    def __init__(self, machine: StreamMachine) -> None:
        self.machine = machine
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.sending = False
        self.task = asyncio.current_task()

    # the Sink ----------------------------------------------------------------------------------

    def ready(self, positions: dict[str, Position], cursor: str) -> None:
        if self.machine.ready(positions, cursor):
            self.wake()

    def gap(self, gap: Gap, cursor: str) -> None:
        if self.machine.gap(gap, cursor):
            self.wake()

    def publication(self, encoded: EncodedPublication, cursor: str, single: bool) -> None:
        if self.machine.publication(encoded, cursor, single):
            self.wake()

    # events ------------------------------------------------------------------------------------

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        # A client that stops reading fills its socket and a write then waits for ever: the
        # stream's end interrupts that write, so the request ends and the subscriber leaves
        # the node instead of lingering (what the client could not take is dropped).
        if self.sending and self.task is not None and (self.machine.ending or self.machine.gone):
            self.task.cancel()

    def arm(self) -> None:
        """Keep the one timer on the machine's deadline."""
        if self._timer is not None:
            self._timer.cancel()
        deadline = self.machine.deadline
        self._timer = None if deadline is None else self._loop.call_at(deadline, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self.machine.tick(self._loop.time())
        self.arm()
        self.wake()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def write(self, send: Send) -> None:
        """Write what the machine produces until the stream ends."""
        machine = self.machine
        loop = self._loop
        while not (machine.ending or machine.ended):
            body = machine.data_to_send()
            if not body:
                self.waiter = loop.create_future()
                try:
                    await self.waiter
                finally:
                    self.waiter = None
                continue
            self.sending = True
            try:
                await send({"type": "http.response.body", "body": body, "more_body": True})
            finally:
                self.sending = False
            machine.written(0)  # uvicorn has it: what waits is what the machine holds

    async def watch(self, receive: Receive) -> None:
        """Notice the client going away even while nothing is written (servers drop late
        writes)."""
        while (await receive())["type"] != "http.disconnect":
            pass
        self.machine.peer_gone()
        self.wake()


async def serve_stream(
    node: Node, request: StreamRequest, receive: Receive, send: Send, framing: Framing, transport: str
) -> None:
    """Run one SSE or NDJSON stream until the client leaves or the server ends it."""
    coding, coding_headers = stream_coding(node.settings, request)
    machine = StreamMachine(stream_config(node.settings), framing, coding)
    driver = _Driver(machine)
    stream = StreamSubscriber(node, request, transport, driver)
    stream.info = machine.close_info

    def ended_by_server() -> None:
        assert stream.closing is not None
        if machine.disconnect(stream.closing):
            driver.wake()

    stream.on_end.append(ended_by_server)
    try:
        await stream.start()
    except TidingsError as exc:
        await answer_error(send, exc, request.cors)
        return
    loop = asyncio.get_running_loop()
    expires = request.credentials.expires_at
    machine.open(loop.time(), None if expires is None else expires - time.time())
    driver.arm()
    headers = [(b"content-type", framing.content_type), *STREAM_HEADERS, *coding_headers, *request.cors]
    watcher = loop.create_task(driver.watch(receive))

    async def leave() -> None:
        driver.cancel()
        watcher.cancel()
        await stream.close()

    try:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        try:
            await driver.write(send)
        except asyncio.CancelledError:
            if not (machine.ending or machine.gone) or driver.task is None:
                raise
            driver.task.uncancel()  # interrupted by the end
        if machine.overflowed:
            node.metrics.outbox_overflow(transport)
        if machine.ending:
            last = machine.farewell(loop.time())
            await leave()  # before waiting on a client that may not read
            # uvicorn writes a body once the socket has drained: the farewell goes out behind
            # what the socket holds if the client reads it in time, else the client is cut
            assert machine.deadline is not None
            try:
                async with asyncio.timeout_at(machine.deadline):
                    await send({"type": "http.response.body", "body": last, "more_body": False})
                    machine.written(0)
            except TimeoutError:
                machine.tick(loop.time())
                if machine.abort and request.abort is not None:
                    request.abort()
    except OSError:
        pass  # the client went away mid-write
    finally:
        await leave()


class SSEEndpoint(Endpoint):
    """The ASGI endpoint of ``/sse``."""

    transport = "sse"
    last_event_id = True

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        self.framing = SSEFraming(node.settings.sse.retry_ms)

    async def serve(self, request: StreamRequest, receive: Receive, send: Send) -> None:
        await serve_stream(self.node, request, receive, send, self.framing, self.transport)


class StreamEndpoint(Endpoint):
    """The ASGI endpoint of ``/stream``."""

    transport = "stream"
    framing = NDJSONFraming()

    async def serve(self, request: StreamRequest, receive: Receive, send: Send) -> None:
        await serve_stream(self.node, request, receive, send, self.framing, self.transport)
