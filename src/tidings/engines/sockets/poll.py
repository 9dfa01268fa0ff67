"""``GET /poll`` on the owned-socket engine: long polls held by a callback and a timer."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from tidings.engines.sockets.exchange import PushExchange
from tidings.engines.sockets.http import RequestHead
from tidings.exceptions import TidingsError
from tidings.transports.http_common import (
    StreamRequest,
    StreamSubscriber,
    answer_error,
)
from tidings.transports.long_poll import POLL_HEADERS, PollSink, serve_short_poll

if TYPE_CHECKING:
    from tidings.engines.sockets.protocol import FastContext


log = logging.getLogger("tidings.fast")


__all__ = ["FastPoll"]


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


