"""Consumers: publish what a database outbox or a queue holds (``[consumers.NAME]``).

- :mod:`tidings.consumers.base`: the :class:`Consumer` interface every kind implements;
- :mod:`tidings.consumers.runner`: the loop (publish with idempotency keys, order per partition,
  dead letters, backoff, metrics);
- :mod:`tidings.consumers.service`: the node's consumers, started and stopped with the server;
- one module per kind: ``postgres``, ``redis_stream``, ``nats_jetstream``, ``amqp``.

The message rules (sans-I/O) are in :mod:`tidings.core.consumer_message`; the application's side
(writing outbox rows in its own transaction) in :mod:`tidings.outbox`. See
``docs/reference/consumers.md``.
"""

from tidings.consumers.base import Consumer, Message, SourceUnavailable

__all__ = ["Consumer", "Message", "SourceUnavailable"]
