"""AMQP 0-9-1 (RabbitMQ) consumer: manual acknowledgement, a prefetch window, a dead-letter queue.

The consumer reads ``queue`` (declared durable when missing) with a prefetch of twice
``batch_size`` (the next batch arrives while one is published: with one batch in flight the
broker waited for each ack, a third slower), takes at most ``batch_size`` at once, and
acknowledges only after the runner published (one ``basic.ack`` ``multiple`` per batch). A
message that cannot be published is published, persistent and confirmed by the broker, to the
queue ``dead_letter`` (default ``QUEUE.dead``, declared durable when missing) through the default
exchange, with its headers plus ``x-tidings-error`` and ``x-tidings-queue``; it is acknowledged
with its batch.

Ids. AMQP gives a message no id of its own: the idempotency key of a message that gives none is
``NAME:MESSAGE_ID``, from its ``message_id`` property, so a message the broker redelivers after a
crash is published once. A message with neither ``message_id`` nor ``idempotency_key`` is
published at least once (a redelivery after a crash between publish and ack is published again).

Order. A queue with one consumer delivers in order, and what a dead consumer's channel held
unacknowledged goes back to its place at the head. A release (the hub refused for a while)
reopens the channel, which requeues everything unacknowledged in order. Several nodes consuming
one queue share it, and order between them is lost, unless the application declares the queue
with ``x-single-active-consumer``: then one node consumes and the others stand by.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from typing import ClassVar

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from aio_pika.exceptions import ChannelClosed

from tidings.consumers.base import Consumer, Message
from tidings.core.consumer_message import DeadLetter, parse_message
from tidings.settings import ConsumerSettings

__all__ = ["AmqpConsumer"]


class AmqpConsumer(Consumer):
    """See the module docstring."""

    kind: ClassVar[str] = "amqp"

    def __init__(self, name: str, settings: ConsumerSettings) -> None:
        super().__init__(name, settings)
        self.queue = settings.queue
        self.dead_letter_queue = settings.dead_letter or f"{self.queue}.dead"
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._taken: set[int] = set()  # delivery tags fetched and not acknowledged yet

    def describe(self) -> str:
        return f"amqp queue {self.queue}"

    def _bound(self) -> AbstractChannel:
        if self._connection is None or self._connection.is_closed or self._channel is None:
            raise ConnectionError("not connected to the AMQP broker")
        if self._channel.is_closed:
            raise ConnectionError("the AMQP channel closed")
        return self._channel

    async def connect(self) -> None:
        await self.close()
        # aio_pika.connect, not connect_robust: reconnecting is the runner's job, with its
        # backoff and /readyz saying so meanwhile.
        self._connection = await aio_pika.connect(self.settings.url, timeout=5)
        await self.setup()
        await self._open()

    async def _open(self) -> None:
        """A new channel consuming the queue: with it, a clean inbox."""
        assert self._connection is not None
        self._inbox = asyncio.Queue()
        self._taken = set()
        channel = await self._connection.channel(publisher_confirms=True)
        self._channel = channel
        await channel.set_qos(prefetch_count=2 * self.settings.batch_size)
        queue = await channel.declare_queue(self.queue, passive=True)
        await queue.consume(self._inbox.put, no_ack=False)

    async def setup(self) -> list[str]:
        assert self._connection is not None
        return [await self._ensure(self._connection, name) for name in (self.queue, self.dead_letter_queue)]

    @staticmethod
    async def _ensure(connection: AbstractConnection, name: str) -> str:
        """Declare ``name`` durable unless it exists. Its arguments (``x-single-active-consumer``,
        a queue type) are the application's: a redeclare with others would fail. A passive
        declare of a missing queue closes its channel, hence one channel per step."""
        async with connection.channel() as channel:
            try:
                await channel.declare_queue(name, passive=True)
                return f"queue {name}: exists"
            except ChannelClosed:
                pass
        async with connection.channel() as channel:
            await channel.declare_queue(name, durable=True)
        return f"queue {name}: created"

    async def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    async def fetch(self, max_messages: int, wait: float) -> Sequence[Message]:
        self._bound()
        try:
            first = await asyncio.wait_for(self._inbox.get(), wait)
        except TimeoutError:
            self._bound()
            return []
        received = [first]
        while len(received) < max_messages and not self._inbox.empty():
            received.append(self._inbox.get_nowait())
        self._taken.update(m.delivery_tag for m in received if m.delivery_tag is not None)
        return [self._message(m) for m in received]

    def _message(self, incoming: AbstractIncomingMessage) -> Message:
        ident = incoming.message_id
        # Without a message_id nothing identifies a redelivery: a key of its own (at least once).
        key = self.default_key(ident) if ident else f"{self.name}:{uuid.uuid4().hex}"
        request = parse_message(
            incoming.body,
            default_key=key,
            allow=self.settings.channels,
            max_bytes=self.settings.max_message_bytes,
        )
        return Message(
            id=ident or f"delivery {incoming.delivery_tag}",
            partition=self.queue,
            request=request,
            handle=incoming,
        )

    async def ack(self, messages: Sequence[Message]) -> None:
        """Acknowledge every delivery up to the last one (fetches come in delivery-tag order,
        and all before it were acknowledged or released already)."""
        self._bound()
        if messages:
            last: AbstractIncomingMessage = messages[-1].handle
            await last.ack(multiple=True)
            tag = last.delivery_tag or 0
            self._taken = {t for t in self._taken if t > tag}

    async def release(self, messages: Sequence[Message]) -> None:
        """Reopen the channel: the broker requeues everything unacknowledged (these and the
        prefetched ones behind them) at its place, so they come again in order."""
        if messages:
            channel = self._bound()
            await channel.close()
            await self._open()

    async def dead_letter(self, message: Message, reason: DeadLetter) -> None:
        channel = self._bound()
        incoming: AbstractIncomingMessage = message.handle
        headers = dict(incoming.headers or {})
        headers.update(
            {"x-tidings-error": f"{reason.code}: {reason.message}"[:1000], "x-tidings-queue": self.queue}
        )
        await channel.default_exchange.publish(
            aio_pika.Message(
                incoming.body,
                headers=headers,
                content_type=incoming.content_type,
                message_id=incoming.message_id,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=self.dead_letter_queue,
        )

    async def lag(self) -> int | None:
        """Messages ready in the queue plus those delivered here and not acknowledged yet."""
        channel = self._bound()
        declared = await channel.declare_queue(self.queue, passive=True)
        ready = declared.declaration_result.message_count or 0
        return int(ready) + self._inbox.qsize() + len(self._taken)
