"""NATS JetStream source: a durable pull consumer, acknowledged after publish, with a dead-letter stream.

The source binds to the durable consumer ``durable`` of ``stream`` (found by ``subject`` when
not named), creating it when missing: pull, explicit acknowledgement, ``ack_wait`` seconds,
filtered on ``subject``. Each message's data is the JSON message; its stream sequence is its id
(``STREAM:SEQ``), so a redelivery publishes with the same idempotency key.

A message that cannot be published is published to ``dead_letter_subject`` (captured by the
stream ``dead_letter_stream``, created when missing) with the error in the ``Tidings-Error``
header and a ``Nats-Msg-Id`` of its origin (JetStream drops a second copy inside the stream's
duplicate window), then acknowledged.

Order. JetStream delivers a consumer's messages in stream order; what reorders them is a
redelivery: the messages a dead consumer took but never acknowledged come back only after
``ack_wait``, after newer ones a fetch would hand out first. So a source that starts while its
consumer has messages pending acknowledgement waits ``ack_wait`` (plus a margin) before its
first fetch: by then the server redelivers those first. Several nodes bound to one durable share
its messages; order between them is not kept.
"""

from __future__ import annotations

import asyncio
import contextlib

import nats
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig
from nats.js.errors import FetchTimeoutError, NotFoundError

from tidings.consumers.delivery import Delivery, unreachable

__all__ = ["NatsJetStreamSource"]

_CONNECTION_ERRORS = (NatsError, OSError, asyncio.TimeoutError)

# The redelivery timer fires at ack_wait; this covers the server's timer granularity.
_REDELIVERY_MARGIN = 0.5


class NatsJetStreamSource:
    """See the module docstring. ``connect`` before ``take``; ``close`` when done (idempotent).

    ``fetch_wait``: seconds one ``take`` waits for messages. ``ack_wait`` must be longer than
    the publish of one batch takes, or the server redelivers a batch still being published.
    """

    def __init__(
        self,
        *,
        url: str,
        subject: str,
        durable: str,
        stream: str | None = None,
        dead_letter_subject: str | None = None,
        dead_letter_stream: str | None = None,
        ack_wait: float = 30.0,
        fetch_wait: float = 1.0,
    ) -> None:
        self.url = url
        self.subject = subject
        self.durable = durable
        self.stream = stream
        self.dead_letter_subject = dead_letter_subject or f"tidings_dead.{durable}"
        self.dead_letter_stream = dead_letter_stream or f"TIDINGS_DEAD_{durable}"
        self.ack_wait = ack_wait
        self.fetch_wait = fetch_wait
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self._stream_name = stream or ""

    @property
    def description(self) -> str:
        return f"NATS JetStream consumer {self.durable!r} on {self.subject!r}"

    async def connect(self) -> None:
        """Connect, bind (creating the durable consumer and the dead-letter stream if missing),
        and wait out the redelivery of what a dead predecessor left unacknowledged."""
        with unreachable(self.description, *_CONNECTION_ERRORS):
            await self._connect()

    async def _connect(self) -> None:
        await self.close()
        # Reconnecting is the consumer's job (with its backoff, and /readyz saying so meanwhile).
        nc = await nats.connect(self.url, allow_reconnect=False, connect_timeout=5)
        self._nc = nc
        js = nc.jetstream()
        self._js = js
        stream = self.stream or await js.find_stream_name_by_subject(self.subject)
        self._stream_name = stream
        try:
            info = await js.consumer_info(stream, self.durable)
        except NotFoundError:
            info = await js.add_consumer(
                stream,
                ConsumerConfig(
                    durable_name=self.durable,
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    filter_subject=self.subject,
                    ack_wait=self.ack_wait,
                    max_deliver=-1,
                ),
            )
        try:
            await js.stream_info(self.dead_letter_stream)
        except NotFoundError:
            await js.add_stream(
                StreamConfig(name=self.dead_letter_stream, subjects=[self.dead_letter_subject])
            )
        self._sub = await js.pull_subscribe_bind(self.durable, stream)
        if info.num_ack_pending:
            wait = (info.config.ack_wait or self.ack_wait) + _REDELIVERY_MARGIN
            await asyncio.sleep(wait)

    async def close(self) -> None:
        nc, self._nc, self._js, self._sub = self._nc, None, None, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()

    def _bound(self) -> tuple[JetStreamContext, JetStreamContext.PullSubscription]:
        if self._js is None or self._sub is None or self._nc is None or self._nc.is_closed:
            raise ConnectionError("not connected to NATS")
        return self._js, self._sub

    async def take(self, limit: int) -> list[Delivery]:
        """Up to ``limit`` messages in stream order (waits ``fetch_wait`` for the first)."""
        with unreachable(self.description, *_CONNECTION_ERRORS):
            return await self._take(limit)

    async def _take(self, limit: int) -> list[Delivery]:
        _, sub = self._bound()
        try:
            messages = await sub.fetch(limit, timeout=self.fetch_wait)
        except (TimeoutError, NatsTimeoutError, FetchTimeoutError):
            self._bound()  # a fetch that timed out because the connection went is an error
            return []
        deliveries = []
        for message in messages:
            meta = message.metadata
            deliveries.append(
                Delivery(
                    id=f"{meta.stream}:{meta.sequence.stream}",
                    body=message.data,
                    handle=message,
                    redelivered=meta.num_delivered > 1,
                )
            )
        return deliveries

    async def ack(self, deliveries: list[Delivery]) -> None:
        """Acknowledge each, waiting for the server's confirmation of the last (acks are ordered)."""
        with unreachable(self.description, *_CONNECTION_ERRORS):
            await self._ack(deliveries)

    async def _ack(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries[:-1]:
            await delivery.handle.ack()
        if deliveries:
            await deliveries[-1].handle.ack_sync(timeout=5)

    async def dead_letter(self, delivery: Delivery, error: str) -> None:
        with unreachable(self.description, *_CONNECTION_ERRORS):
            await self._dead_letter(delivery, error)

    async def _dead_letter(self, delivery: Delivery, error: str) -> None:
        js, _ = self._bound()
        message = delivery.handle
        headers = dict(message.headers or {})
        headers.update(
            {
                "Tidings-Error": error[:1000],
                "Tidings-Origin": delivery.id or "",
                "Tidings-Subject": message.subject,
                "Nats-Msg-Id": f"tidings-dead:{delivery.id}",
            }
        )
        await js.publish(self.dead_letter_subject, message.data, headers=headers)
        await message.ack_sync(timeout=5)

    async def lag(self) -> int:
        """Messages not delivered yet plus those delivered and not acknowledged."""
        with unreachable(self.description, *_CONNECTION_ERRORS):
            return await self._lag()

    async def _lag(self) -> int:
        js, _ = self._bound()
        info = await js.consumer_info(self._stream_name, self.durable)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)
