"""A connection's bounded send queue (formerly ``tidings.outbox.Outbox``).

Fan-out calls :meth:`SendQueue.push` synchronously and never waits on a socket. A connection's writer
task drains everything queued in one go (:meth:`SendQueue.wait_batch`), so a burst becomes one write
where the transport can batch. When the :class:`Backlog` rule says the consumer is slow, the
queue *overflows*: it drops everything, refuses further pushes and calls ``on_overflow`` once,
and the transport closes the connection as a slow consumer (close code 4008), so one slow reader
never stalls or bloats the others. (HTTP streams keep what they produce in their machine,
:class:`~tidings.machines.stream.StreamMachine`, which applies the same rule.) Memory for an idle
connection: the object, an empty deque, no task-side objects.

:class:`~tidings.machines.backlog.Backlog` is the slow-consumer rule of every engine and
transport: the ASGI path applies it to what waits in a :class:`SendQueue`, the fast engine to its
transports' write buffers. (Neither engine queues through :class:`SendQueue` today: the
WebSocket and stream machines keep their own frames and apply the same rule.)
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from tidings.machines.backlog import Backlog

__all__ = ["SendQueue"]

T = TypeVar("T", str, bytes)


class SendQueue(Generic[T]):
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
        """Queue ``item``; False if the queue is closed or has just overflowed.

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
        """Everything queued, waiting for at least one item; [] once the queue is closed."""
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
