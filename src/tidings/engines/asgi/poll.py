"""``GET /poll`` on the ASGI engine: a long poll held by its request's task."""

from __future__ import annotations

import asyncio
import contextlib

from tidings.engines.asgi.endpoint import Endpoint
from tidings.exceptions import TidingsError
from tidings.node import Node
from tidings.transports.http_common import (
    Receive,
    Send,
    StreamRequest,
    StreamSubscriber,
    answer,
    answer_error,
)
from tidings.transports.long_poll import POLL_HEADERS, PollSink, serve_short_poll

__all__ = ["PollEndpoint", "long_poll"]


async def _held(sink: PollSink, receive: Receive, seconds: float) -> None:
    """Wait for news, the timeout, or ``http.disconnect`` (whichever is first)."""
    async def gone() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.get_running_loop().create_task(gone())
    try:
        await asyncio.wait((sink.news, watcher), timeout=seconds,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher


async def long_poll(node: Node, request: StreamRequest, receive: Receive, send: Send) -> None:
    """Subscribe, wait for news (or the timeout, or the client leaving), answer."""
    sink = PollSink(request.limit)
    stream = StreamSubscriber(node, request, "longpoll", sink)
    stream.on_end.append(sink.wake)
    try:
        await stream.start()
    except TidingsError as exc:
        await answer_error(send, exc, request.cors)
        return
    try:
        if not sink.news.done():
            await _held(sink, receive, request.timeout)
    finally:
        await stream.close()
    await answer(send, 200, sink.body(), POLL_HEADERS + request.cors)




class PollEndpoint(Endpoint):
    """The ASGI endpoint of ``/poll`` (long polling; short polling with ``timeout=0``)."""

    transport = "longpoll"
    poll = True

    async def serve(self, request: StreamRequest, receive: Receive, send: Send) -> None:
        if request.timeout > 0:
            await long_poll(self.node, request, receive, send)
        else:
            await serve_short_poll(self.node, request, send)
