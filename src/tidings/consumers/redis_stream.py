"""Redis Streams consumer: a consumer group, ``XREADGROUP``, ``XACK`` after publish, ``XAUTOCLAIM``.

Each stream entry carries the message (``docs/reference/consumers.md``) as JSON text in its
``payload`` field. The consumer reads as a member of the group ``group`` (created at the start
of the stream, with the stream, when missing) and acknowledges with ``XACK`` only after the
runner published. An entry that cannot be published is copied to the dead-letter stream
(``dead_letter``, default ``STREAM:dead``) with its fields plus ``error``, ``stream`` and ``id``,
and acknowledged, in one ``MULTI``. The idempotency key of an entry that gives none is
``NAME:ENTRY-ID``: the same however often it is read.

Order. Redis hands a group's new entries out in id order; what can reorder them is a takeover:
entries a dead member read but never acknowledged stay in its pending list, older than anything
unread. So the consumer, in this order:

1. re-reads its own pending entries (``XREADGROUP … 0``: after a lost connection or a release);
2. at start, notes the newest entry pending in the group, and reads nothing new until every
   entry up to it was acknowledged (its own, re-read; a live peer's) or claimed (``XAUTOCLAIM``
   once idle ``claim_idle`` seconds: a dead member's) and published;
3. then reads new entries, and claims idle ones again every ``claim_idle / 2`` seconds.

The member name is ``HOST-PID``: a restarted node is a new member that claims what its previous
life left, after ``claim_idle``. With one node consuming a stream, order is kept across crashes.
Several nodes in one group share the entries and publish concurrently: order between them is not
kept. Members with nothing pending, idle ``10 × claim_idle``, are removed from the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from tidings.consumers.base import Consumer, Message
from tidings.core.consumer_message import DeadLetter, parse_message
from tidings.settings import ConsumerSettings

__all__ = ["FIELD", "RedisStreamConsumer"]

#: The entry field that holds the message.
FIELD = "payload"
#: Most dead letters kept (``XADD … MAXLEN ~``).
DEAD_LETTER_MAXLEN = 100_000


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class RedisStreamConsumer(Consumer):
    """See the module docstring."""

    kind: ClassVar[str] = "redis_stream"

    def __init__(self, name: str, settings: ConsumerSettings, *, member: str | None = None) -> None:
        super().__init__(name, settings)
        self.stream = settings.stream
        self.group = settings.group
        self.member = member or f"{socket.gethostname()}-{os.getpid()}"
        self.dead_letter_stream = settings.dead_letter or f"{self.stream}:dead"
        self.claim_idle = settings.claim_idle
        self.claim_every = max(settings.claim_idle / 2, 0.1)
        self._redis: Redis | None = None
        # Where the re-read of this member's own pending entries stands; None once done.
        self._own_pending: str | None = "0"
        # The newest entry pending in the group at start (see the module docstring).
        self._barrier: tuple[int, int] | None = None
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        # Entries handed out and not acknowledged or released yet: XAUTOCLAIM may return this
        # member's own idle entries, which must not be handed out twice.
        self._held: set[str] = set()

    def describe(self) -> str:
        return f"redis stream {self.stream} (group {self.group})"

    @property
    def redis(self) -> Redis:
        if self._redis is None:
            raise ConnectionError("not connected to Redis")
        return self._redis

    async def connect(self) -> None:
        await self.close()
        # A read blocks at most poll_interval: a socket silent for much longer is a dead peer.
        self._redis = Redis.from_url(
            self.settings.url,
            socket_connect_timeout=5,
            socket_timeout=self.settings.poll_interval + 10,
            socket_keepalive=True,
        )
        await self._create_group()
        self._own_pending = "0"
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        self._held = set()
        self._barrier = await self._newest_pending()

    async def _create_group(self) -> bool:
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            return False
        return True

    async def setup(self) -> list[str]:
        created = await self._create_group()
        state = "created" if created else "exists"
        return [f"consumer group {self.group} on stream {self.stream}: {state}"]

    async def close(self) -> None:
        redis, self._redis = self._redis, None
        if redis is not None:
            with contextlib.suppress(Exception):
                await redis.aclose()

    async def fetch(self, max_messages: int, wait: float) -> Sequence[Message]:
        """Own pending entries first, then claimed ones, then new ones (waiting ``wait``)."""
        messages = await self._fetch(max_messages, wait)
        self._held.update(m.id for m in messages)
        return messages

    async def _fetch(self, max_messages: int, wait: float) -> list[Message]:
        while self._own_pending is not None:
            messages, last = await self._read(self._own_pending, max_messages, block=None)
            self._own_pending = last  # None once the list is read through
            if messages:
                return messages
        now = time.monotonic()
        if self._barrier is not None or now >= self._next_claim:
            claimed = await self._claim(max_messages)
            if claimed:
                return claimed
            self._next_claim = now + self.claim_every
            if self._barrier is not None:
                if await self._barrier_holds():
                    await asyncio.sleep(min(wait, self.claim_every, 0.2))
                    return []
                self._barrier = None
        messages, _ = await self._read(">", max_messages, block=wait)
        return messages

    async def ack(self, messages: Sequence[Message]) -> None:
        if messages:
            await self.redis.xack(self.stream, self.group, *[m.id for m in messages])
            self._held.difference_update(m.id for m in messages)

    async def release(self, messages: Sequence[Message]) -> None:
        """They stay in this member's pending list: the next fetch re-reads it from the start."""
        if messages:
            self._own_pending = "0"
            self._held.clear()

    async def dead_letter(self, message: Message, reason: DeadLetter) -> None:
        """Copy the entry to the dead-letter stream with the error, and acknowledge it, atomically."""
        fields = {**message.raw, "error": f"{reason.code}: {reason.message}", "stream": self.stream}
        fields["id"] = message.id
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.dead_letter_stream, fields, maxlen=DEAD_LETTER_MAXLEN, approximate=True)
            pipe.xack(self.stream, self.group, message.id)
            await pipe.execute()
        self._held.discard(message.id)

    async def lag(self) -> int | None:
        """Entries the group has not read yet plus those read and not acknowledged."""
        groups: Any = await self.redis.xinfo_groups(self.stream)
        for group in groups:
            if _text(group.get("name")) == self.group:
                unread = group.get("lag")
                if unread is None:  # Redis cannot tell after deletions inside the unread range
                    return None
                return int(unread) + int(group.get("pending") or 0)
        return None

    # ---------------------------------------------------------------------------------------

    def _message(self, entry_id: Any, fields: dict[Any, Any]) -> Message:
        entry = _text(entry_id)
        named = {_text(k): v for k, v in fields.items()}
        body = named.get(FIELD)
        if body is None:
            request: Any = DeadLetter("bad_request", f"the entry has no {FIELD} field")
        else:
            request = parse_message(
                body if isinstance(body, bytes) else str(body).encode(),
                default_key=self.default_key(entry),
                allow=self.settings.channels,
                max_bytes=self.settings.max_message_bytes,
            )
        return Message(id=entry, partition=self.stream, request=request, raw=named)

    async def _read(self, start: str, count: int, block: float | None) -> tuple[list[Message], str | None]:
        """The entries after ``start`` (``>``: new ones), and the id of the last one read (None
        when there was none); entries deleted while pending are acknowledged and skipped."""
        try:
            response: Any = await self.redis.xreadgroup(
                self.group,
                self.member,
                {self.stream: start},
                count=count,
                block=max(1, int(block * 1000)) if block is not None else None,
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):  # the stream was deleted (or Redis came back empty)
                await self.connect()
                return [], None
            raise
        if not response or not response[0][1]:
            return [], None
        _, entries = response[0]
        messages, gone = [], []
        for entry_id, fields in entries:
            if not fields:  # deleted or trimmed while pending (XADD needs a field): nothing to publish
                gone.append(entry_id)
            else:
                messages.append(self._message(entry_id, fields))
        if gone:
            await self.redis.xack(self.stream, self.group, *gone)
        return messages, _text(entries[-1][0])

    async def _claim(self, count: int) -> list[Message]:
        """Claim entries idle ``claim_idle`` in other members' pending lists, oldest first."""
        response: Any = await self.redis.xautoclaim(
            self.stream,
            self.group,
            self.member,
            int(self.claim_idle * 1000),
            start_id=self._claim_cursor,
            count=count,
        )
        self._claim_cursor = _text(response[0])
        claimed = [
            self._message(entry_id, fields)
            for entry_id, fields in response[1]
            if fields and _text(entry_id) not in self._held
        ]
        if not claimed and self._claim_cursor == "0-0":
            await self._forget_dead_members()
        return claimed

    async def _newest_pending(self) -> tuple[int, int] | None:
        """The newest entry pending in the group (``XPENDING`` summary), or None.

        Its own entries count too: they are re-read first, so they never hold the barrier long.
        """
        summary: Any = await self.redis.xpending(self.stream, self.group)
        if not summary or not summary.get("pending"):
            return None
        return _id_key(_text(summary["max"]))

    async def _barrier_holds(self) -> bool:
        """Whether an entry up to the barrier is still pending, other than those this member
        holds (handed out, to be acknowledged before its next fetch)."""
        assert self._barrier is not None
        ms, seq = self._barrier
        rows: Any = await self.redis.xpending_range(
            self.stream, self.group, min="-", max=f"{ms}-{seq}", count=len(self._held) + 1
        )
        return any(_text(row["message_id"]) not in self._held for row in rows)

    async def _forget_dead_members(self) -> None:
        idle_ms = self.claim_idle * 10_000
        members: Any = await self.redis.xinfo_consumers(self.stream, self.group)
        for member in members:
            name = _text(member.get("name"))
            pending, idle = int(member.get("pending") or 0), int(member.get("idle") or 0)
            if name != self.member and not pending and idle > idle_ms:
                await self.redis.xgroup_delconsumer(self.stream, self.group, name)
