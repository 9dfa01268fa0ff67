"""NATS JetStream consumer: a durable pull consumer, acknowledged after publish, dead letters in a stream.

The consumer binds to the durable consumer ``durable`` of the stream ``stream``, creating it when
missing: pull, explicit acknowledgement, ``ack_wait`` = ``claim_idle`` seconds, filtered on
``subject`` ('' = the whole stream). A message's data is the JSON message; the idempotency key of
one that gives none is ``NAME:SEQUENCE@CREATED`` (its stream sequence, the same on every
redelivery, and the stream's creation time in ms, since a stream made again numbers from 1).

A message that cannot be published goes to the subject ``dead_letter`` (default
``tidings.dead.STREAM``), with its headers plus ``Tidings-Error`` and ``Tidings-Sequence``, and a
``Nats-Msg-Id`` that makes JetStream drop a second copy within its duplicate window. A stream
must capture that subject: when none does, the consumer creates ``STREAM_dead`` for it.

Order. JetStream delivers in stream order; what reorders is a redelivery: the messages a dead
node took and never acknowledged come back only after ``ack_wait``, after newer ones a fetch
would hand out first. So a consumer whose durable has messages pending acknowledgement when it
connects waits ``ack_wait`` (plus a margin) before its first fetch: by then the server
redelivers those first. A release (the hub refused for a while) naks the messages in order, and
they come back first. Several nodes bound to one durable share its messages; order between them
is not kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import ClassVar
from urllib.parse import urlsplit

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import NoServersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig
from nats.js.errors import FetchTimeoutError, NotFoundError

from tidings.consumers.base import Consumer, Message, SourceUnavailable
from tidings.core.consumer_message import DeadLetter, parse_message
from tidings.settings import ConsumerSettings

__all__ = ["NatsJetStreamConsumer"]

log = logging.getLogger("tidings.consumers")

# The server's redelivery timer fires at ack_wait; this covers its granularity.
_REDELIVERY_MARGIN = 0.5
_ACK_TIMEOUT = 5.0


async def _log_error(error: Exception) -> None:
    """The client's error callback: the runner reports what fails (its default logs tracebacks)."""
    log.debug("nats client: %r", error)


class NatsJetStreamConsumer(Consumer):
    """See the module docstring."""

    kind: ClassVar[str] = "nats_jetstream"

    def __init__(self, name: str, settings: ConsumerSettings) -> None:
        super().__init__(name, settings)
        self.stream = settings.stream
        self.subject = settings.subject
        self.durable = settings.durable
        self.dead_letter_subject = settings.dead_letter or f"tidings.dead.{self.stream}"
        self.ack_wait = settings.claim_idle
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        # The stream's creation time, in the keys: a stream deleted and made again numbers its
        # messages from 1 again, and its new message 1 must not pass for the old one.
        self._created = ""

    def describe(self) -> str:
        return f"nats stream {self.stream} (durable {self.durable})"

    def _bound(self) -> tuple[JetStreamContext, JetStreamContext.PullSubscription]:
        if self._js is None or self._sub is None or self._nc is None or self._nc.is_closed:
            raise ConnectionError("not connected to NATS")
        return self._js, self._sub

    async def connect(self) -> None:
        """Connect and bind (creating what is missing); then wait out the redelivery of what a
        dead predecessor left unacknowledged."""
        await self.close()
        # Reconnecting is the runner's job (with its backoff, and /readyz saying so meanwhile):
        # the client's is off, and its first connect tries twice (it never gives up with 0).
        try:
            self._nc = await nats.connect(
                self.settings.url,
                allow_reconnect=False,
                connect_timeout=5,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.1,
                error_cb=_log_error,
            )
        except NoServersError:
            where = urlsplit(self.settings.url)
            address = f"{where.hostname}:{where.port or 4222}"
            raise SourceUnavailable(f"NATS at {address} does not answer") from None
        self._js = self._nc.jetstream()
        await self.setup()
        info = await self._js.consumer_info(self.stream, self.durable)
        self._sub = await self._js.pull_subscribe_bind(self.durable, self.stream)
        if info.num_ack_pending:
            await asyncio.sleep((info.config.ack_wait or self.ack_wait) + _REDELIVERY_MARGIN)

    async def setup(self) -> list[str]:
        assert self._js is not None
        js = self._js
        lines = []
        try:
            stream = await js.stream_info(self.stream)
        except NotFoundError:
            raise SourceUnavailable(
                f"no JetStream stream {self.stream}: the application creates it "
                f"(nats stream add {self.stream} --subjects '…')"
            ) from None
        self._created = f"@{int(stream.created.timestamp() * 1000)}" if stream.created else ""
        try:
            await js.consumer_info(self.stream, self.durable)
            lines.append(f"durable consumer {self.durable} on stream {self.stream}: exists")
        except NotFoundError:
            await js.add_consumer(
                self.stream,
                ConsumerConfig(
                    durable_name=self.durable,
                    ack_policy=AckPolicy.EXPLICIT,
                    deliver_policy=DeliverPolicy.ALL,
                    filter_subject=self.subject or None,
                    ack_wait=self.ack_wait,
                    max_deliver=-1,
                ),
            )
            lines.append(f"durable consumer {self.durable} on stream {self.stream}: created")
        try:
            holder = await js.find_stream_name_by_subject(self.dead_letter_subject)
            lines.append(f"dead letters to {self.dead_letter_subject}: stream {holder}")
        except NotFoundError:
            holder = f"{self.stream}_dead"
            await js.add_stream(StreamConfig(name=holder, subjects=[self.dead_letter_subject]))
            lines.append(f"dead letters to {self.dead_letter_subject}: stream {holder} created")
        return lines

    async def close(self) -> None:
        nc, self._nc, self._js, self._sub = self._nc, None, None, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()

    async def fetch(self, max_messages: int, wait: float) -> Sequence[Message]:
        _, sub = self._bound()
        try:
            received = await sub.fetch(max_messages, timeout=wait)
        except (TimeoutError, NatsTimeoutError, FetchTimeoutError):
            self._bound()  # a fetch that timed out because the connection went is an error
            return []
        messages = []
        for msg in received:
            sequence = str(msg.metadata.sequence.stream)
            request = parse_message(
                msg.data,
                default_key=self.default_key(sequence + self._created),
                allow=self.settings.channels,
                max_bytes=self.settings.max_message_bytes,
            )
            messages.append(Message(id=sequence, partition=self.stream, request=request, handle=msg))
        return messages

    async def ack(self, messages: Sequence[Message]) -> None:
        """Acknowledge each; the last waits for the server (which handles them in order)."""
        self._bound()
        for message in messages[:-1]:
            await message.handle.ack()
        if messages:
            last: Msg = messages[-1].handle
            await last.ack_sync(timeout=_ACK_TIMEOUT)

    async def release(self, messages: Sequence[Message]) -> None:
        """Nak them in order: the server redelivers them before anything newer."""
        self._bound()
        for message in messages:
            await message.handle.nak()

    async def dead_letter(self, message: Message, reason: DeadLetter) -> None:
        js, _ = self._bound()
        msg: Msg = message.handle
        headers = dict(msg.headers or {})
        headers.update(
            {
                "Tidings-Error": f"{reason.code}: {reason.message}"[:1000],
                "Tidings-Stream": self.stream,
                "Tidings-Sequence": message.id,
                "Tidings-Subject": msg.subject,
                "Nats-Msg-Id": f"tidings-dead:{self.stream}:{message.id}",
            }
        )
        await js.publish(self.dead_letter_subject, msg.data, headers=headers)

    async def lag(self) -> int | None:
        """Messages not delivered yet plus those delivered and not acknowledged."""
        js, _ = self._bound()
        info = await js.consumer_info(self.stream, self.durable)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)
