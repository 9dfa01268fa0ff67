"""``GET /poll`` on the ASGI engine: a long poll held by its request's task, driving the poll
machine (:mod:`tidings.machines.poll`, where the rules are)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from tidings.engines.asgi.endpoint import Endpoint
from tidings.exceptions import TidingsError
from tidings.machines.poll import Poll
from tidings.node import Node
from tidings.transports.http_common import (
    Receive,
    Send,
    StreamRequest,
    answer,
    answer_error,
)
from tidings.transports.long_poll import (
    POLL_HEADERS,
    leave,
    new_poll,
    poll_subscriber,
    serve_short_poll,
)

__all__ = ["PollEndpoint", "long_poll"]


async def _held(poll: Poll, due: asyncio.Future[None], wake: Callable[[], None], receive: Receive) -> None:
    """Until the answer is due: the machine's timer, and ``http.disconnect`` watched."""
    loop = asyncio.get_running_loop()
    timer: asyncio.TimerHandle

    def tick() -> None:
        nonlocal timer
        if poll.tick(loop.time()):
            wake()
        elif not poll.due:  # fired early
            timer = loop.call_at(poll.deadline, tick)

    async def gone() -> None:
        with contextlib.suppress(Exception):  # a receive that fails: the client is gone too
            while (await receive())["type"] != "http.disconnect":
                pass
        if poll.peer_gone():
            wake()

    timer = loop.call_at(poll.deadline, tick)
    watcher = loop.create_task(gone())
    try:
        await due
    finally:
        timer.cancel()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher


async def long_poll(node: Node, request: StreamRequest, receive: Receive, send: Send) -> None:
    """Subscribe, hold until the answer is due, leave, then answer (the machine's order)."""
    loop = asyncio.get_running_loop()
    due: asyncio.Future[None] = loop.create_future()

    def wake() -> None:  # the task resumes after this loop iteration
        if not due.done():
            due.set_result(None)

    poll = new_poll(request, loop.time())
    stream = poll_subscriber(node, request, poll, wake)
    try:
        await stream.start()
    except TidingsError as exc:
        await answer_error(send, exc, request.cors)
        return
    try:
        if not poll.due:
            await _held(poll, due, wake, receive)
    finally:
        leave(stream, poll)
    body = poll.end()
    if body is not None:
        await answer(send, 200, body, POLL_HEADERS + request.cors)


class PollEndpoint(Endpoint):
    """The ASGI endpoint of ``/poll`` (long polling; short polling with ``timeout=0``)."""

    transport = "longpoll"
    poll = True

    async def serve(self, request: StreamRequest, receive: Receive, send: Send) -> None:
        if request.timeout > 0:
            await long_poll(self.node, request, receive, send)
        else:
            await serve_short_poll(self.node, request, send)
