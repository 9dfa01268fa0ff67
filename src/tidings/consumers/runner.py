"""The loop that drives one :class:`~tidings.consumers.base.Consumer` (see its module docstring).

For each fetched batch the runner publishes through the node's one door (:meth:`Node.publish` /
:meth:`Node.broadcast`, so every check and limit of the server API applies) with each message's
idempotency key, partitions concurrently and each partition in order. A message the node refuses
for good (bad channel, too big, forbidden) is dead-lettered; a publish that fails for a while (the
broker is down) stops its partition: the messages not done are released to be fetched again, and
the runner waits (backoff) before the next fetch. A source that fails (connection lost, server
restarted) is closed and reconnected with backoff. Nothing is acknowledged before it was
published or dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tidings.consumers.base import Consumer, Message
from tidings.core.consumer_message import DeadLetter, backoff_delay, by_partition, dead_letter_for
from tidings.node import Node

__all__ = ["ConsumerState", "Runner"]

log = logging.getLogger("tidings.consumers")

#: Least seconds between two lag readings (a PostgreSQL count is not free).
LAG_EVERY = 1.0


@dataclass(slots=True)
class ConsumerState:
    """What ``/metrics``, ``/readyz``, the console and ``tidings consumers status`` show."""

    name: str
    kind: str
    source: str
    connected: bool = False
    error: str | None = None
    lag: int | None = None
    published: int = 0
    failed: int = 0
    dead_lettered: int = 0
    reconnects: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "source": self.source,
            "connected": self.connected,
            "error": self.error,
            "lag": self.lag,
            "published": self.published,
            "failed": self.failed,
            "dead_lettered": self.dead_lettered,
            "reconnects": self.reconnects,
        }


class _PublishFailed(Exception):
    """A publish that may succeed later (the broker is down): stop this partition."""


class Runner:
    """Runs ``consumer`` for ``node`` until :meth:`stop`."""

    def __init__(self, node: Node, consumer: Consumer) -> None:
        self.node = node
        self.consumer = consumer
        self.settings = consumer.settings
        self.state = ConsumerState(consumer.name, consumer.kind, consumer.describe())
        self._task: asyncio.Task[None] | None = None
        self._lag_at = 0.0
        self._attempt = 0  # failed attempts in a row (the backoff's exponent)

    def start(self) -> None:
        self._task = self.node.spawn(self._run())

    async def stop(self) -> None:
        """Stop at once: a batch in flight is given back by the source (rolled back,
        unacknowledged); what it had published is dropped as a duplicate when fetched again."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        try:
            while True:
                try:
                    await self.consumer.connect()
                    await self._consume()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._attempt += 1
                    if self.state.connected or self._attempt == 1:
                        log.warning("consumer %s: source unavailable: %s", self.state.name, exc)
                    self.state.connected = False
                    self.state.error = f"{type(exc).__name__}: {exc}"[:300]
                    self.state.reconnects += 1
                    await self.consumer.close()
                    await asyncio.sleep(self._delay(self._attempt))
        finally:
            self.state.connected = False
            await self.consumer.close()

    def _reached(self) -> None:
        """The source answered a fetch: connected (a connect alone may precede a failing fetch,
        e.g. a missing table, and must not reset the backoff)."""
        if self._attempt:
            log.warning("consumer %s: source reachable again", self.state.name)
        self.state.connected, self.state.error, self._attempt = True, None, 0

    def _delay(self, attempt: int) -> float:
        jitter = random.uniform(-0.1, 0.1)
        return backoff_delay(
            attempt, base=self.settings.retry_base, cap=self.settings.retry_max, jitter=jitter
        )

    async def _consume(self) -> None:
        stalled = 0
        while True:
            batch = await self.consumer.fetch(self.settings.batch_size, self.settings.poll_interval)
            if not self.state.connected:
                self._reached()
            done: list[Message] = []
            rest: list[Message] = []
            if batch:
                done, rest = await self._publish(batch)
            await self.consumer.ack(done)
            await self.consumer.release(rest)
            await self._update_lag()
            if rest:
                # The broker refused for a while: wait before the same messages come again.
                stalled += 1
                await asyncio.sleep(self._delay(stalled))
            else:
                stalled = 0

    async def _update_lag(self) -> None:
        now = time.monotonic()
        if now - self._lag_at >= LAG_EVERY:
            self._lag_at = now
            self.state.lag = await self.consumer.lag()

    async def _publish(self, batch: Sequence[Message]) -> tuple[list[Message], list[Message]]:
        """Publish ``batch``: (done: published or dead-lettered, rest: to release), each in the
        order fetched."""
        partitions = list(by_partition(batch, lambda message: message.partition).values())
        outcomes = await asyncio.gather(*(self._publish_partition(part) for part in partitions))
        finished = {
            id(message) for count, part in zip(outcomes, partitions, strict=True) for message in part[:count]
        }
        done = [message for message in batch if id(message) in finished]
        rest = [message for message in batch if id(message) not in finished]
        return done, rest

    async def _publish_partition(self, messages: list[Message]) -> int:
        """How many of ``messages`` (in order) were published or dead-lettered."""
        for count, message in enumerate(messages):
            try:
                await self._publish_one(message)
            except _PublishFailed:
                return count
        return len(messages)

    async def _publish_one(self, message: Message) -> None:
        request = message.request
        if isinstance(request, DeadLetter):
            await self._dead_letter(message, request)
            return
        try:
            if request.broadcast:
                await self.node.broadcast(
                    list(request.channels),
                    request.data,
                    event=request.event,
                    idempotency_key=request.idempotency_key,
                )
            else:
                await self.node.publish(
                    request.channels[0],
                    request.data,
                    event=request.event,
                    idempotency_key=request.idempotency_key,
                )
        except Exception as exc:
            reason = dead_letter_for(exc)
            if reason is None:
                self.state.failed += 1
                log.warning(
                    "consumer %s: publish of %s failed, will retry: %s", self.state.name, message.id, exc
                )
                raise _PublishFailed from exc
            await self._dead_letter(message, reason)
            return
        self.state.published += 1

    async def _dead_letter(self, message: Message, reason: DeadLetter) -> None:
        log.warning(
            "consumer %s: message %s dead-lettered: %s: %s",
            self.state.name,
            message.id,
            reason.code,
            reason.message,
        )
        await self.consumer.dead_letter(message, reason)
        self.state.dead_lettered += 1
