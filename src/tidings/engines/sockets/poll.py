"""``GET /poll`` on the owned-socket engine: long polls held by a callback and a timer (no task),
driving the poll machine (:mod:`tidings.machines.poll`, where the rules are)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from tidings.engines.sockets.exchange import PushExchange
from tidings.engines.sockets.http import RequestHead
from tidings.exceptions import TidingsError
from tidings.machines.poll import Poll
from tidings.transports.http_common import (
    StreamRequest,
    StreamSubscriber,
    answer_error,
)
from tidings.transports.long_poll import (
    POLL_HEADERS,
    leave,
    new_poll,
    poll_subscriber,
    serve_short_poll,
)

if TYPE_CHECKING:
    from tidings.engines.sockets.protocol import FastContext

__all__ = ["FastPoll"]


class FastPoll(PushExchange):
    """``GET /poll`` on the fast path. A long poll is held by no task: once subscribed, the
    machine's inputs (the subscription's news, the node's disconnect, the timer, the client
    leaving) that make the answer due schedule :meth:`_answer`, which leaves the hub, then
    writes the answer in one go."""

    __slots__ = ("_machine", "_stream", "_timer")

    transport_name = "longpoll"
    poll = True

    def __init__(
        self, ctx: FastContext, transport: asyncio.Transport, head: RequestHead, rest: bytes
    ) -> None:
        super().__init__(ctx, transport, head, rest)
        self._machine: Poll | None = None
        self._stream: StreamSubscriber | None = None  # set while held
        self._timer: asyncio.TimerHandle | None = None

    async def serve_request(self, request: StreamRequest) -> None:
        if request.timeout <= 0:
            await serve_short_poll(self.node, request, self.send)
            self.complete()
            return
        loop = self._ctx.loop
        poll = self._machine = new_poll(request, loop.time())
        stream = poll_subscriber(self.node, request, poll, self._due)
        try:
            await stream.start()
        except TidingsError as exc:
            await answer_error(self.send, exc, request.cors)
            self.complete()
            return
        self._stream = stream
        if self._lost:
            poll.peer_gone()
        if poll.due:  # news already (a resume), or the node's disconnect, or the client left
            self._answer()
            return
        self.on_lost = self._gone
        self._timer = loop.call_at(poll.deadline, self._tick)

    def _due(self) -> None:
        # at the end of this loop iteration: publications of the same iteration join the answer,
        # and the caller (a fan-out) is not re-entered. Before the hold, serve_request answers.
        if self._stream is not None:
            self._ctx.loop.call_soon(self._answer)

    def _tick(self) -> None:
        assert self._machine is not None
        if self._machine.tick(self._ctx.loop.time()):
            self._answer()
        elif not self._machine.due:  # fired early
            self._timer = self._ctx.loop.call_at(self._machine.deadline, self._tick)

    def _gone(self) -> None:
        assert self._machine is not None
        if self._machine.peer_gone():
            self._answer()

    def _answer(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None or self._machine is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self.on_lost = None
        leave(stream, self._machine)
        body = self._machine.end()
        if body is not None:
            self.respond(
                200,
                [
                    (b"content-type", b"application/json"),
                    (b"content-length", b"%d" % len(body)),
                    *POLL_HEADERS,
                    *stream.request.cors,
                ],
                body,
            )
        self.complete()
