"""AMQP 0-9-1 (RabbitMQ) source: manual acknowledgement, a prefetch window, a dead-letter queue.

The source consumes ``queue`` (declared durable when missing) with ``prefetch`` messages in
flight, and acknowledges each only after the consumer published it (one ``basic.ack``
with ``multiple`` per batch). A message that cannot be published is published to
``dead_letter_queue`` (declared durable when missing) through the default exchange, persistent,
with the error in its ``x-tidings-error`` header, and acknowledged once the broker confirmed it.

Ids. AMQP gives a message no id of its own: the source uses the ``message_id`` property, so a
message the broker redelivers after a crash is published with the same idempotency key. A
message with neither ``message_id`` nor an ``idempotency_key`` in its body may be published
twice when it is redelivered.

Order. A queue with one consumer delivers in order, and a message requeued by a dead consumer's
channel keeps its place at the head. Several nodes consuming one queue share it and order is
lost between them, unless the queue is declared with ``x-single-active-consumer``: then one node
consumes and the others stand by (RabbitMQ's own failover).
"""

from __future__ import annotations

import asyncio
import contextlib

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue
from aio_pika.exceptions import AMQPError, ChannelClosed

from tidings.consumers.delivery import Delivery, unreachable

__all__ = ["AmqpSource"]

_CONNECTION_ERRORS = (AMQPError, OSError, asyncio.TimeoutError)


class AmqpSource:
    """See the module docstring. ``connect`` before ``take``; ``close`` when done (idempotent).

    ``fetch_wait``: seconds one ``take`` waits for a first message.
    """

    def __init__(
        self,
        *,
        url: str,
        queue: str,
        dead_letter_queue: str | None = None,
        prefetch: int = 100,
        fetch_wait: float = 1.0,
    ) -> None:
        self.url = url
        self.queue = queue
        self.dead_letter_queue = dead_letter_queue or f"{queue}.dead"
        self.prefetch = prefetch
        self.fetch_wait = fetch_wait
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._taken: set[int] = set()  # delivery tags taken and not acknowledged yet

    @property
    def description(self) -> str:
        return f"AMQP queue {self.queue!r}"

    async def connect(self) -> None:
        """Connect, declare the queues if missing, and start consuming with the prefetch window."""
        with unreachable(self.description, *_CONNECTION_ERRORS):
            await self._connect()

    async def _connect(self) -> None:
        await self.close()
        # aio_pika.connect (not connect_robust): reconnecting is the consumer's job, with its
        # backoff and /readyz saying so meanwhile; a new connection starts a clean inbox.
        connection = await aio_pika.connect(self.url, timeout=5)
        self._connection = connection
        self._inbox = asyncio.Queue()
        self._taken = set()
        for name in (self.dead_letter_queue, self.queue):
            await self._ensure(connection, name)
        channel = await connection.channel(publisher_confirms=True)
        self._channel = channel
        await channel.set_qos(prefetch_count=self.prefetch)
        self._queue = await channel.declare_queue(self.queue, passive=True)
        await self._queue.consume(self._inbox.put, no_ack=False)

    @staticmethod
    async def _ensure(connection: AbstractConnection, name: str) -> None:
        """Declare ``name`` durable unless it exists (its arguments, such as
        ``x-single-active-consumer``, are the application's: a redeclare with others fails).
        A passive declare of a missing queue closes its channel, hence one channel per check."""
        async with connection.channel() as channel:
            try:
                await channel.declare_queue(name, passive=True)
                return
            except ChannelClosed:
                pass
        async with connection.channel() as channel:
            await channel.declare_queue(name, durable=True)

    async def close(self) -> None:
        connection, self._connection, self._channel, self._queue = self._connection, None, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    def _bound_channel(self) -> AbstractChannel:
        if self._connection is None or self._connection.is_closed or self._channel is None:
            raise ConnectionError("not connected to the AMQP broker")
        if self._channel.is_closed:
            raise ConnectionError("the AMQP channel closed")
        return self._channel

    async def take(self, limit: int) -> list[Delivery]:
        """Up to ``limit`` messages in delivery order (waits ``fetch_wait`` for the first)."""
        with unreachable(self.description, *_CONNECTION_ERRORS):
            return await self._take(limit)

    async def _take(self, limit: int) -> list[Delivery]:
        self._bound_channel()
        try:
            first = await asyncio.wait_for(self._inbox.get(), self.fetch_wait)
        except TimeoutError:
            self._bound_channel()
            return []
        messages = [first]
        while len(messages) < limit and not self._inbox.empty():
            messages.append(self._inbox.get_nowait())
        self._taken.update(m.delivery_tag for m in messages if m.delivery_tag is not None)
        return [
            Delivery(id=m.message_id or None, body=m.body, handle=m, redelivered=bool(m.redelivered))
            for m in messages
        ]

    async def ack(self, deliveries: list[Delivery]) -> None:
        """Acknowledge every delivery up to the last one (deliveries come in tag order)."""
        with unreachable(self.description, *_CONNECTION_ERRORS):
            await self._ack(deliveries)

    async def _ack(self, deliveries: list[Delivery]) -> None:
        self._bound_channel()
        if deliveries:
            last: AbstractIncomingMessage = deliveries[-1].handle
            await last.ack(multiple=True)
            self._taken = {tag for tag in self._taken if last.delivery_tag is None or tag > last.delivery_tag}

    async def dead_letter(self, delivery: Delivery, error: str) -> None:
        with unreachable(self.description, *_CONNECTION_ERRORS):
            await self._dead_letter(delivery, error)

    async def _dead_letter(self, delivery: Delivery, error: str) -> None:
        channel = self._bound_channel()
        original: AbstractIncomingMessage = delivery.handle
        headers = dict(original.headers or {})
        headers.update({"x-tidings-error": error[:1000], "x-tidings-queue": self.queue})
        await channel.default_exchange.publish(
            aio_pika.Message(
                original.body,
                headers=headers,
                content_type=original.content_type,
                message_id=original.message_id,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=self.dead_letter_queue,
        )
        await original.ack()
        self._taken.discard(original.delivery_tag or 0)

    async def lag(self) -> int:
        """Messages ready in the queue plus those delivered here and not acknowledged yet."""
        with unreachable(self.description, *_CONNECTION_ERRORS):
            return await self._lag()

    async def _lag(self) -> int:
        channel = self._bound_channel()
        declared = await channel.declare_queue(self.queue, passive=True)
        ready = declared.declaration_result.message_count or 0
        return int(ready) + self._inbox.qsize() + len(self._taken)
