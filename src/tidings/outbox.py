"""A connection's bounded send queue.

Fan-out calls :meth:`Outbox.push` synchronously and never waits on a socket. A connection's writer
task drains everything queued in one go (:meth:`Outbox.wait_batch`), so a burst becomes one write
where the transport can batch. Past ``max_bytes`` or ``max_messages`` the outbox *overflows*: it
drops everything, refuses further pushes and calls ``on_overflow`` once, and the transport closes
the connection as a slow consumer (close code 4008), so one slow reader never stalls or bloats the
others. Memory for an idle connection: the object, an empty deque, no task-side objects.

A resume's replay (the publications recovered from history) is pushed with ``bounded=False``: it
is already bounded by the namespace's history size, and counting it would cut off every client
that resumes from further back than the outbox holds. Only what comes on top of it counts.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Outbox"]

T = TypeVar("T", str, bytes)


class Outbox(Generic[T]):
    __slots__ = (
        "_items",
        "_waiter",
        "closed",
        "max_bytes",
        "max_messages",
        "on_overflow",
        "overflowed",
        "queued_bytes",
        "unbounded_bytes",
        "unbounded_items",
    )

    def __init__(self, max_bytes: int, max_messages: int,
                 on_overflow: Callable[[], None] | None = None) -> None:
        self._items: deque[T] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.queued_bytes = 0
        self.unbounded_bytes = self.unbounded_items = 0
        self.max_bytes = max_bytes
        self.max_messages = max_messages
        self.on_overflow = on_overflow
        self.overflowed = False
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    def push(self, item: T, *, bounded: bool = True) -> bool:
        """Queue ``item``; False if the outbox is closed or has just overflowed.

        ``bounded=False`` queues without counting against the limits (a resume's replay).
        """
        if self.closed:
            return False
        items = self._items
        items.append(item)
        self.queued_bytes += len(item)
        if not bounded:
            self.unbounded_bytes += len(item)
            self.unbounded_items += 1
        elif (self.queued_bytes - self.unbounded_bytes > self.max_bytes
              or len(items) - self.unbounded_items > self.max_messages):
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
        self.queued_bytes = self.unbounded_bytes = self.unbounded_items = 0
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
        self.queued_bytes = self.unbounded_bytes = self.unbounded_items = 0
        return batch
