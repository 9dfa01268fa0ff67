"""Redis Streams source: a consumer group, ``XREADGROUP``, ``XACK`` after publish, ``XAUTOCLAIM``.

Each stream entry carries the message in one field (``field``, default ``payload``) as JSON
text. The source reads with ``XREADGROUP`` as consumer ``consumer`` of group ``group`` (created
at the stream's start, with the stream, when missing) and acknowledges with ``XACK`` only after
the consumer published. An entry that cannot be published is copied to the dead-letter stream
with its error and acknowledged in one ``MULTI``, so it never blocks the entries behind it.

Order. Redis hands a group's new entries out in id order; what can reorder them is a takeover:
entries a dead consumer read but never acknowledged stay in its pending list, older than
anything still unread. So the source, in this order:

1. re-reads its own pending entries (``XREADGROUP … 0``: a consumer restarted under a stable
   ``consumer`` name resumes at once);
2. at start notes the newest entry other consumers hold pending, and reads nothing new until
   every entry up to it is acknowledged (a live peer) or claimed (``XAUTOCLAIM`` once idle
   ``min_idle`` seconds: a dead one) and published;
3. then reads new entries, claiming idle ones again every ``claim_interval`` seconds.

With one node consuming a stream, order is kept across crashes. Several nodes in one group share
the entries and publish them concurrently: order between nodes is then not kept (give each its
own stream, or its own group if every node should publish everything, which the idempotency
keys make harmless). Consumers with nothing pending that were idle ``10 × min_idle`` are removed
from the group (a dead node's name would otherwise stay forever).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tidings.consumers.delivery import Delivery, unreachable

__all__ = ["RedisStreamSource"]

_CONNECTION_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class RedisStreamSource:
    """See the module docstring. ``connect`` before ``take``; ``close`` when done (idempotent).

    ``min_idle``: seconds an entry must sit unacknowledged in another consumer's pending list
    before it is claimed (longer than the slowest publish of a batch, or a live peer's entries
    are claimed from under it: harmless for duplicates, but it reorders). ``block``: seconds one
    ``take`` waits for new entries.
    """

    def __init__(
        self,
        *,
        url: str,
        stream: str,
        group: str = "tidings",
        consumer: str,
        field: str = "payload",
        dead_letter_stream: str | None = None,
        dead_letter_maxlen: int = 100_000,
        min_idle: float = 30.0,
        claim_interval: float | None = None,
        block: float = 1.0,
    ) -> None:
        self.url = url
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.field = field
        self.dead_letter_stream = dead_letter_stream or f"{stream}:dead"
        self.dead_letter_maxlen = dead_letter_maxlen
        self.min_idle = min_idle
        self.claim_interval = claim_interval if claim_interval is not None else max(min_idle / 2, 0.1)
        self.block = block
        self._redis: Redis | None = None
        # Where the re-read of this consumer's own pending entries stands; None once done.
        self._own_pending: str | None = "0"
        self._barrier: tuple[int, int] | None = None
        self._claim_cursor = "0-0"
        self._next_claim = 0.0

    @property
    def description(self) -> str:
        return f"redis stream {self.stream!r} group {self.group!r} as {self.consumer!r}"

    async def connect(self) -> None:
        """Connect, create the group if missing, and note other consumers' pending entries."""
        with unreachable(self.description, *_CONNECTION_ERRORS):
            await self._connect()

    async def _connect(self) -> None:
        await self.close()
        redis = Redis.from_url(self.url, socket_connect_timeout=5, health_check_interval=0)
        self._redis = redis
        try:
            await redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._own_pending = "0"
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        self._barrier = await self._newest_pending_of_others()

    async def close(self) -> None:
        redis, self._redis = self._redis, None
        if redis is not None:
            with contextlib.suppress(Exception):
                await redis.aclose()

    @property
    def redis(self) -> Redis:
        if self._redis is None:
            raise RuntimeError("RedisStreamSource.take before connect")
        return self._redis

    async def take(self, limit: int) -> list[Delivery]:
        """Up to ``limit`` entries in order: own pending, then claimed, then new (waits ``block``)."""
        with unreachable(self.description, *_CONNECTION_ERRORS):
            return await self._take(limit)

    async def _take(self, limit: int) -> list[Delivery]:
        if self._own_pending is not None:
            entries = await self._read(self._own_pending, limit, block=None)
            if entries:
                self._own_pending = entries[-1].handle[0]
                return entries
            self._own_pending = None
        now = time.monotonic()
        if self._barrier is not None or now >= self._next_claim:
            claimed = await self._claim(limit)
            if claimed:
                return claimed
            self._next_claim = now + self.claim_interval
            if self._barrier is not None:
                if await self._barrier_holds():
                    await self._sleep_a_little()
                    return []
                self._barrier = None
        return await self._read(">", limit, block=self.block)

    async def ack(self, deliveries: list[Delivery]) -> None:
        with unreachable(self.description, *_CONNECTION_ERRORS):
            await self._ack(deliveries)

    async def _ack(self, deliveries: list[Delivery]) -> None:
        if deliveries:
            await self.redis.xack(self.stream, self.group, *[d.handle[0] for d in deliveries])

    async def dead_letter(self, delivery: Delivery, error: str) -> None:
        """Copy the entry to the dead-letter stream with ``error``, and acknowledge it, atomically."""
        with unreachable(self.description, *_CONNECTION_ERRORS):
            await self._dead_letter(delivery, error)

    async def _dead_letter(self, delivery: Delivery, error: str) -> None:
        entry_id, original = delivery.handle
        fields = {**original, "error": error, "stream": self.stream, "id": entry_id}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.dead_letter_stream, fields, maxlen=self.dead_letter_maxlen, approximate=True)
            pipe.xack(self.stream, self.group, entry_id)
            await pipe.execute()

    async def lag(self) -> int:
        """Entries the group has not read yet plus those read and not acknowledged."""
        with unreachable(self.description, *_CONNECTION_ERRORS):
            return await self._lag()

    async def _lag(self) -> int:
        for group in await self.redis.xinfo_groups(self.stream):
            if _text(group.get("name")) == self.group:
                unread = group.get("lag")
                if unread is None:  # Redis cannot tell after deletions: count from the last read
                    rest: Any = await self.redis.xrange(self.stream, f"({_text(group['last-delivered-id'])}")
                    unread = len(rest)
                return int(unread) + int(group.get("pending") or 0)
        return 0

    # ---------------------------------------------------------------------------------------

    async def _read(self, start: str, limit: int, block: float | None) -> list[Delivery]:
        try:
            response: Any = await self.redis.xreadgroup(
                self.group,
                self.consumer,
                {self.stream: start},
                count=limit,
                block=int(block * 1000) if block is not None else None,
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):  # the stream was deleted (or Redis came back empty)
                await self.connect()
                return []
            raise
        if not response:
            return []
        _, entries = response[0]
        deliveries = []
        gone = []
        for entry_id, fields in entries:
            if fields is None:  # trimmed or deleted while pending: nothing to publish
                gone.append(entry_id)
                continue
            deliveries.append(self._delivery(entry_id, fields, redelivered=start != ">"))
        if gone:
            await self.redis.xack(self.stream, self.group, *gone)
        return deliveries

    def _delivery(self, entry_id: Any, fields: dict[Any, Any], *, redelivered: bool) -> Delivery:
        entry = _text(entry_id)
        named = {_text(k): v for k, v in fields.items()}
        # A missing field reads as an empty body: not JSON, so it is dead-lettered saying so.
        body = named.get(self.field, b"")
        return Delivery(
            id=f"{self.stream}:{entry}",
            body=body if isinstance(body, bytes) else str(body).encode(),
            handle=(entry, named),
            redelivered=redelivered,
        )

    async def _claim(self, limit: int) -> list[Delivery]:
        """Claim entries idle ``min_idle`` in other consumers' pending lists, oldest first."""
        response: Any = await self.redis.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            int(self.min_idle * 1000),
            start_id=self._claim_cursor,
            count=limit,
        )
        next_cursor, entries = response[0], response[1]
        self._claim_cursor = _text(next_cursor)
        claimed = [
            self._delivery(entry_id, fields, redelivered=True)
            for entry_id, fields in cast(list[tuple[Any, Any]], entries)
            if fields is not None
        ]
        if not claimed and self._claim_cursor == "0-0":
            await self._forget_dead_consumers()
        return claimed

    async def _newest_pending_of_others(self) -> tuple[int, int] | None:
        newest: tuple[int, int] | None = None
        for consumer in await self.redis.xinfo_consumers(self.stream, self.group):
            name = _text(consumer.get("name"))
            if name == self.consumer or not int(consumer.get("pending") or 0):
                continue
            rows = await self.redis.xpending_range(
                self.stream, self.group, min="-", max="+", count=1_000_000, consumername=name
            )
            if rows:
                last = _id_key(_text(rows[-1]["message_id"]))
                newest = last if newest is None or last > newest else newest
        return newest

    async def _barrier_holds(self) -> bool:
        """Whether an entry up to the barrier is still pending with another consumer."""
        assert self._barrier is not None
        ms, seq = self._barrier
        rows = await self.redis.xpending_range(self.stream, self.group, min="-", max=f"{ms}-{seq}", count=1)
        return bool(rows)

    async def _sleep_a_little(self) -> None:
        await asyncio.sleep(min(self.claim_interval, 0.2))

    async def _forget_dead_consumers(self) -> None:
        idle_ms = self.min_idle * 10_000
        for consumer in await self.redis.xinfo_consumers(self.stream, self.group):
            name = _text(consumer.get("name"))
            pending, idle = int(consumer.get("pending") or 0), int(consumer.get("idle") or 0)
            if name != self.consumer and not pending and idle > idle_ms:
                await self.redis.xgroup_delconsumer(self.stream, self.group, name)
