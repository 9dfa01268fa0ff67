"""A connection's bounded send queue.

Fan-out calls :meth:`Outbox.push` synchronously and never waits on a socket. A connection's writer
task drains everything queued in one go (:meth:`Outbox.wait_batch`), so a burst becomes one write
where the transport can batch. When the :class:`Backlog` rule says the consumer is slow, the
outbox *overflows*: it drops everything, refuses further pushes and calls ``on_overflow`` once,
and the transport closes the connection as a slow consumer (close code 4008, a ``disconnect``
notice on HTTP streams), so one slow reader never stalls or bloats the others. Memory for an idle
connection: the object, an empty deque, no task-side objects.

:class:`Backlog` is the slow-consumer rule of every engine and transport: the ASGI path applies it
to what waits in an :class:`Outbox`, the fast engine to its transports' write buffers.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Backlog", "Outbox"]

T = TypeVar("T", str, bytes)


class Backlog:
    """When a consumer is slow: the one rule (``limits.outbox_bytes``) for every engine.

    A connection's *backlog* is the bytes written to it that its peer has not taken yet (what
    waits in its outbox, or in its transport's write buffer). Past ``limit`` the consumer is slow
    and is cut (4008). Bytes that are bounded by something else are *allowed* on top of the limit
    (:meth:`allow`): a resume's replay, bounded by the channel's history, and what a stream
    produces before it goes live (its ``ready`` notice, gaps and replay). Counting them would cut
    every client that resumes from further back than the limit, on every retry. The allowance
    lasts until the backlog is back within the limit, i.e. until the client has read the replay;
    from then on only live data the client fails to read counts.

    Pure arithmetic, no I/O: the caller reports the backlog it measures after each write.
    """

    __slots__ = ("allowance", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.allowance = 0

    def allow(self, size: int) -> None:
        """Let ``size`` more bytes (replay) sit in the backlog without counting."""
        self.allowance += size

    def overflows(self, backlog: int) -> bool:
        """Whether a backlog of ``backlog`` bytes makes the consumer slow."""
        if backlog <= self.limit:
            self.allowance = 0  # the allowed bytes have been taken
            return False
        return backlog > self.limit + self.allowance


class Outbox(Generic[T]):
    __slots__ = (
        "_items",
        "_waiter",
        "backlog",
        "closed",
        "on_overflow",
        "overflowed",
        "queued_bytes",
    )

    def __init__(self, max_bytes: int, on_overflow: Callable[[], None] | None = None) -> None:
        self._items: deque[T] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.queued_bytes = 0
        self.backlog = Backlog(max_bytes)
        self.on_overflow = on_overflow
        self.overflowed = False
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    def push(self, item: T, *, bounded: bool = True) -> bool:
        """Queue ``item``; False if the outbox is closed or has just overflowed.

        ``bounded=False`` queues it as allowed by the :class:`Backlog` rule (a resume's replay).
        """
        if self.closed:
            return False
        self._items.append(item)
        self.queued_bytes += len(item)
        if not bounded:
            self.backlog.allow(len(item))
        elif self.backlog.overflows(self.queued_bytes):
            self.overflowed = True
            self.close()
            if self.on_overflow is not None:
                self.on_overflow()
            return False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return True

    def close(self) -> None:
        """Refuse further pushes, drop what is queued and wake the writer."""
        self.closed = True
        self._items.clear()
        self.queued_bytes = 0
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_batch(self) -> list[T]:
        """Everything queued, waiting for at least one item; [] once the outbox is closed."""
        while not self._items:
            if self.closed:
                return []
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self.closed:
            return []
        batch = list(self._items)
        self._items.clear()
        self.queued_bytes = 0
        return batch
