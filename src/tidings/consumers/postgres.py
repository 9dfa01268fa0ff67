"""The PostgreSQL outbox consumer (``kind = "postgres"``), on asyncpg.

The application writes rows into the outbox table in its own transactions (:mod:`tidings.outbox`);
this consumer publishes the committed ones and deletes them. One batch is one transaction:

1. in one statement, the partitions of the oldest rows (``ORDER BY id LIMIT``, no row lock) and,
   of those, the ones no other consumer holds: ``pg_try_advisory_xact_lock(hashtext(table),
   hashtext(partition))``, held until the transaction ends;
2. the oldest rows of the partitions held, ``FOR UPDATE SKIP LOCKED``, in a statement of its own
   (its own snapshot, taken after the locks), so they include everything another consumer left
   (it committed or rolled back before its lock was free);
3. publish (the runner), dead letters inserted into the dead-letter table, the rows done deleted
   and the transaction committed in one round trip (``ack``; ``release`` commits when nothing
   was done). Four round trips per batch, with the ``BEGIN``.

Why the partition locks: ``SKIP LOCKED`` alone lets a second consumer take row 3 of a partition
while a first holds rows 1 and 2: both publish at once, and row 3 may go first (if the first
consumer dies before it commits, rows 1 and 2 even come back after it). Holding the whole
partition keeps its order across any number of consumers (tidings nodes), and different
partitions still go in parallel.

Waking: the trigger created by ``tidings consumers init`` notifies
:func:`~tidings.outbox.notify_channel` on every insert (one notification per statement, delivered
at commit); the consumer LISTENs on it and looks at least every ``poll_interval`` seconds anyway
(a notification lost while reconnecting, rows a dead consumer left).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import orjson

from tidings.consumers.base import Consumer, Message, SourceUnavailable
from tidings.core.consumer_message import DeadLetter, check_message
from tidings.outbox import ddl, dead_letter_table, notify_channel
from tidings.settings import ConsumerSettings

__all__ = ["PostgresConsumer"]

#: Rows looked at to find the partitions with work (per batch size).
SCAN_FACTOR = 4


class PostgresConsumer(Consumer):
    kind = "postgres"

    def __init__(self, name: str, settings: ConsumerSettings) -> None:
        super().__init__(name, settings)
        self.table = settings.table
        self.dead = settings.dead_letter or dead_letter_table(self.table)
        self.channel = notify_channel(self.table)
        self._conn: Any = None
        self._open = False  # a batch's transaction is open (BEGIN sent, no COMMIT yet)
        self._wake = asyncio.Event()
        table, dead = self.table, self.dead
        # One round trip: the partitions of the oldest rows, and those of them this transaction
        # could lock (the lock is tried once per partition, and held until commit or rollback).
        self._sql_partitions = (
            "SELECT count(*), coalesce(array_agg(p) FILTER "
            "(WHERE pg_try_advisory_xact_lock(hashtext($2), hashtext(p))), '{}') "
            f"FROM (SELECT DISTINCT partition AS p FROM (SELECT partition FROM {table} "
            "ORDER BY id LIMIT $1) AS oldest) AS candidates"
        )
        self._sql_rows = (
            "SELECT id, created_at, partition, channel, channels, data::text AS data, event, "
            f"idempotency_key FROM {table} WHERE partition = ANY($1::text[]) ORDER BY id LIMIT $2 "
            "FOR UPDATE SKIP LOCKED"
        )
        # The delete and the commit in one round trip: a simple query of two statements, the
        # ids (integers read from the table) written in as literals.
        self._sql_delete_start = f"DELETE FROM {table} WHERE id IN ("
        self._sql_dead = (
            f"INSERT INTO {dead} (id, created_at, partition, channel, channels, data, event, "
            "idempotency_key, error_code, error) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10) "
            "ON CONFLICT (id) DO NOTHING"
        )
        self._sql_lag = f"SELECT count(*) FROM {table}"

    def describe(self) -> str:
        url = urlsplit(self.settings.url)
        return f"postgres {url.hostname or 'localhost'}:{url.port or 5432}{url.path} {self.table}"

    async def connect(self) -> None:
        # synchronous_commit off: a batch's commit (its deletes) lost in a PostgreSQL crash only
        # brings its rows back, and their second publish is dropped by idempotency key; the
        # application's own transactions keep the server's setting.
        self._conn = conn = await asyncpg.connect(
            self.settings.url,
            timeout=10,
            server_settings={
                "synchronous_commit": "off",
                "application_name": f"tidings consumer {self.name}",
            },
        )
        await conn.add_listener(self.channel, self._notified)
        conn.add_termination_listener(self._terminated)
        self._wake.set()  # rows may have come while we were away

    def _notified(self, *args: Any) -> None:
        self._wake.set()

    def _terminated(self, *args: Any) -> None:
        self._wake.set()  # the next query fails at once, and the runner reconnects

    async def setup(self) -> list[str]:
        await self._conn.execute(ddl(self.table, self.settings.dead_letter))
        return [
            f"table {self.table} (outbox), index on (partition, id)",
            f"table {self.dead} (dead letters)",
            f"trigger {self.table.rpartition('.')[2]}_notify: NOTIFY {self.channel} on insert",
        ]

    async def fetch(self, max_messages: int, wait: float) -> Sequence[Message]:
        if not self._wake.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
        self._wake.clear()
        conn = self._conn
        if conn is None or conn.is_closed():
            raise SourceUnavailable("connection closed")
        await conn.execute("BEGIN")
        self._open = True
        try:
            seen, held = await conn.fetchrow(self._sql_partitions, max_messages * SCAN_FACTOR, self.table)
        except asyncpg.UndefinedTableError:
            raise self._missing() from None
        # Read after the locks were taken (a statement of its own: a snapshot of its own).
        rows = await conn.fetch(self._sql_rows, held, max_messages) if held else []
        if not rows:
            await self._end()
            return []
        if len(rows) == max_messages or len(held) < seen:
            self._wake.set()  # more may wait: look again at once (other partitions, the rest)
        return [self._message(row) for row in rows]

    def _message(self, row: Any) -> Message:
        message_id = str(row["id"])
        data = row["data"]
        request: Any
        if len(data) > self.settings.max_message_bytes:
            request = DeadLetter(
                "too_large", f"data of {len(data)} bytes is over {self.settings.max_message_bytes}"
            )
        else:
            try:
                value: dict[str, Any] = {"data": orjson.loads(data)}
            except orjson.JSONDecodeError as exc:  # jsonb holds numbers JSON decoders refuse (1e400)
                return Message(
                    message_id, row["partition"], DeadLetter("bad_request", f"data: {exc}"), raw=row
                )
            for column in ("channel", "channels", "event", "idempotency_key"):
                if row[column] is not None:
                    value[column] = row[column]
            request = check_message(
                value, default_key=self.default_key(message_id), allow=self.settings.channels
            )
        return Message(message_id, row["partition"], request, raw=row)

    async def _end(self) -> None:
        if self._open:
            self._open = False
            await self._conn.execute("COMMIT")

    async def ack(self, messages: Sequence[Message]) -> None:
        """Delete ``messages`` and commit: the batch's transaction ends here."""
        if messages:
            ids = ",".join(str(int(message.id)) for message in messages)
            self._open = False
            await self._conn.execute(f"{self._sql_delete_start}{ids}); COMMIT")

    async def release(self, messages: Sequence[Message]) -> None:
        # The commit (ack's, or this one when nothing was done) unlocks the rest, and the
        # partitions, for the next fetch, ours or another node's.
        await self._end()

    async def dead_letter(self, message: Message, reason: DeadLetter) -> None:
        row = message.raw
        await self._conn.execute(
            self._sql_dead,
            row["id"],
            row["created_at"],
            row["partition"],
            row["channel"],
            row["channels"],
            row["data"],
            row["event"],
            row["idempotency_key"],
            reason.code,
            reason.message,
        )

    async def lag(self) -> int | None:
        try:
            count: int = await self._conn.fetchval(self._sql_lag)
        except asyncpg.UndefinedTableError:
            raise self._missing() from None
        return count

    def _missing(self) -> SourceUnavailable:
        return SourceUnavailable(
            f"table {self.table} does not exist: run `tidings consumers init {self.name}`"
        )

    async def close(self) -> None:
        conn, self._conn, self._open = self._conn, None, False
        if conn is None:
            return
        try:
            await asyncio.wait_for(conn.close(), 2)
        except BaseException:  # a lost server, a timeout, a cancel: drop the socket, no goodbye
            conn.terminate()
            if not isinstance(sys.exc_info()[1], Exception):
                raise
