"""What every consumer kind implements: :class:`Consumer`, and the :class:`Message` it hands over.

A consumer is a thin driver over its source (a PostgreSQL outbox table, a Redis stream, a NATS
JetStream durable consumer, an AMQP queue). It does I/O only; the rules live elsewhere:

- what a message must be to be published, and why it would be dead-lettered:
  :mod:`tidings.core.consumer_message` (the consumer calls :func:`~tidings.core.consumer_message.
  parse_message` or :func:`~tidings.core.consumer_message.check_message` for each message);
- publishing, retrying, ordering, acknowledging, metrics: :class:`~tidings.consumers.runner.Runner`.

The runner's loop, which each method's contract follows::

    connect()                                   # again after any failure, with backoff
    loop:
        batch = fetch(batch_size, poll_interval)    # [] when nothing came within the wait
        publish each message (in order within its partition); dead_letter(m, reason) the bad
        ack(done)          # the published and dead-lettered ones: gone from the source
        release(rest)      # those not done (the broker went away): to be fetched again
    close()

Exactly once into the hub rests on two things the consumer owes: a message is removed from the
source only by :meth:`Consumer.ack`, after its publish; and a message fetched again (after a crash,
a release, a lost connection) carries the same ``default_key`` in its request, so the node's
idempotency window drops the second publish.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from tidings.core.consumer_message import DeadLetter, PublishRequest
from tidings.settings import ConsumerSettings

__all__ = ["Consumer", "Message", "SourceUnavailable"]


class SourceUnavailable(Exception):
    """The source cannot be reached (or went away); the runner reconnects with backoff.

    A consumer may raise it, or let its client library's connection errors through: the runner
    treats any exception from :meth:`Consumer.connect`, :meth:`~Consumer.fetch`,
    :meth:`~Consumer.ack`, :meth:`~Consumer.release` or :meth:`~Consumer.dead_letter` alike
    (logs it, closes, reconnects)."""


@dataclass(frozen=True, slots=True)
class Message:
    """One message read from the source.

    - ``id``: its identity in the source (row id, stream entry id, stream sequence, …), shown in
      logs and dead letters;
    - ``partition``: the order key; messages with the same key are published in the order
      fetched, different keys concurrently (PostgreSQL: the ``partition`` column; a stream or
      subject: one key for the whole source);
    - ``request``: what :mod:`tidings.core.consumer_message` made of it (a
      :class:`PublishRequest`, or a :class:`DeadLetter` to set aside);
    - ``raw``: the message as read (bytes of a queue message, or the row), kept for the dead
      letter;
    - ``handle``: whatever the consumer needs to acknowledge it (delivery tag, msg object).
    """

    id: str
    partition: str
    request: PublishRequest | DeadLetter
    raw: Any = None
    handle: Any = None


class Consumer(abc.ABC):
    """A consumer of one source; subclasses set ``kind`` and implement the abstract methods.

    Construction does no I/O. The runner calls the methods from one task, never concurrently.
    ``name`` is the section name (``[consumers.NAME]``), ``settings`` its settings.
    """

    kind: ClassVar[str]

    def __init__(self, name: str, settings: ConsumerSettings) -> None:
        self.name = name
        self.settings = settings

    def default_key(self, message_id: str) -> str:
        """The idempotency key of a message that gives none: stable across redeliveries."""
        return f"{self.name}:{message_id}"

    @abc.abstractmethod
    async def connect(self) -> None:
        """Open the connection(s); raise if the source cannot be reached.

        Called again after every failure (after :meth:`close`). A source that answers but is not
        set up (no table, no stream) may fail here or in :meth:`fetch`, with a message naming
        ``tidings consumers init NAME``; :meth:`setup` runs after a successful connect."""

    @abc.abstractmethod
    async def fetch(self, max_messages: int, wait: float) -> Sequence[Message]:
        """Up to ``max_messages`` messages, waiting at most ``wait`` seconds for the first one
        (return ``[]`` when none came). Within a partition, in the source's order. The messages
        stay the consumer's (locked, pending, unacknowledged) until :meth:`ack` or
        :meth:`release`."""

    @abc.abstractmethod
    async def ack(self, messages: Sequence[Message]) -> None:
        """Remove ``messages`` from the source for good: they were published or dead-lettered.

        Called once per fetch, possibly with ``[]``, before :meth:`release` of the rest."""

    @abc.abstractmethod
    async def release(self, messages: Sequence[Message]) -> None:
        """Give back ``messages`` (fetched, not acknowledged): they are to be fetched again, in
        their order. Called once per fetch, after :meth:`ack`, possibly with ``[]``."""

    @abc.abstractmethod
    async def dead_letter(self, message: Message, reason: DeadLetter) -> None:
        """Store ``message`` with ``reason`` in the dead-letter place (table, stream, subject,
        queue). It is acknowledged afterwards with the others of its batch (:meth:`ack`); where
        the source allows, both happen atomically (PostgreSQL: one transaction)."""

    @abc.abstractmethod
    async def lag(self) -> int | None:
        """How many messages wait in the source (None when the source cannot say)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connection(s); never raises; may be called when not connected."""

    async def setup(self) -> list[str]:
        """Create what the source needs and is missing (``tidings consumers init NAME``): the
        outbox table and its trigger, a consumer group, a durable consumer, a queue and its
        dead-letter place. Idempotent; returns one line per thing done or found. Called on a
        connected consumer; the default creates nothing."""
        return []

    def describe(self) -> str:
        """The source, for status lines and the console (no credentials)."""
        return self.settings.kind
