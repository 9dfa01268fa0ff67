"""What a queue source hands its consumer: :class:`Delivery`, one message not yet acknowledged.

The Redis Streams, NATS JetStream and AMQP sources share this shape: ``take`` returns deliveries
in the source's order, the consumer publishes each into the hub, then ``ack`` (or
``dead_letter``) gives them back. Nothing is acknowledged before it was published, so a consumer
that dies in between gets the same deliveries again (from itself after a restart, or claimed by
another): the hub's idempotency key, derived from ``id``, makes that second publish a no-op.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["Delivery", "unreachable"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message taken from a source.

    ``id`` is stable across redeliveries of the same message (a stream entry id, a stream
    sequence, an AMQP ``message_id``), or None when the source has none (AMQP messages published
    without ``message_id``): such a message, redelivered after a crash, may be published twice.
    ``body`` is the message as published (JSON text expected). ``handle`` is the source's own
    token for acknowledging it; ``redelivered`` says the source delivered it before.
    """

    id: str | None
    body: bytes
    handle: Any = None
    redelivered: bool = False


@contextlib.contextmanager
def unreachable(what: str, *errors: type[BaseException]) -> Iterator[None]:
    """Re-raise a client library's connection ``errors`` as :class:`ConnectionError` naming ``what``:
    the one exception a consumer retries with backoff (and reports on ``/readyz``)."""
    try:
        yield
    except errors as exc:
        raise ConnectionError(f"{what} unreachable: {exc or type(exc).__name__}") from exc
