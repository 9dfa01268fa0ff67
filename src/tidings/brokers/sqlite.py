"""The SQLite broker: durable history for one node, in one file (stdlib ``sqlite3``, WAL mode).

Every statement runs on one dedicated thread that owns the connection, so the event loop never
blocks on disk and statements never interleave. Each publish is one ``BEGIN IMMEDIATE``
transaction: read the channel's offset, insert the publication with the next one, trim, remember
the idempotency key, commit. A failure anywhere (read-only file, full disk, I/O error) rolls the
whole transaction back and raises :class:`~tidings.exceptions.Unavailable`: nothing half-written.

Epochs: the file gets a random epoch when it is created; a channel takes it at its first
publication and keeps it in its row, so a restarted broker on the same file sees the same epoch
and offsets (clients resume with ``recovered: true``), and a new file (history lost) means a new
epoch. A channel never published to reports the file's epoch with offset 0, which stays valid for
its first publication.

Fan-out: this broker serves the process it runs in. After a commit, the worker thread schedules
``handler.on_publication`` on the event loop with ``call_soon_threadsafe``; that queue is FIFO and
commits are serial, so handlers see offset order, before ``publish`` returns.

History bounds: rows beyond ``history_size`` are deleted at each publish, rows older than
``history_ttl`` are deleted at each publish and filtered out on read (by ``now_ms``). Idempotency
keys are remembered ``idempotency_window`` seconds; expired ones are purged every few hundred
publishes.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson

from tidings.brokers.base import BrokerHandler, PublishResult
from tidings.core.events import Gap, Page, Publication
from tidings.core.history import resolve_since
from tidings.core.payload import publication_from_json
from tidings.core.permissions import NamespaceOptions
from tidings.core.position import Position, new_epoch
from tidings.core.wire.frames import publication_json
from tidings.exceptions import BadRequest, Unavailable

__all__ = ["SQLiteBroker"]

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS tidings_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS channels (
    name TEXT PRIMARY KEY, epoch TEXT NOT NULL, offset INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS publications (
    channel TEXT NOT NULL, offset INTEGER NOT NULL, time INTEGER NOT NULL, payload BLOB NOT NULL,
    PRIMARY KEY (channel, offset)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency (
    channel TEXT NOT NULL, key TEXT NOT NULL, time INTEGER NOT NULL, payload BLOB NOT NULL,
    PRIMARY KEY (channel, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_time ON idempotency (time);
"""

PURGE_EVERY = 256


class SQLiteBroker:
    """See the module docstring. ``path`` is a file name or a ``file:`` URI (e.g. ``mode=ro``)."""

    def __init__(self, path: str, *, idempotency_window: float = 300.0, busy_timeout: float = 5.0) -> None:
        self.path = path
        self.idempotency_window = idempotency_window
        self.busy_timeout = busy_timeout
        self.epoch = ""
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._handler: BrokerHandler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._publishes = 0

    # the worker thread ---------------------------------------------------------------------

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` on the worker thread; sqlite3 errors become Unavailable."""
        executor, conn = self._executor, self._conn
        if executor is None or conn is None:
            raise Unavailable("sqlite broker is not started")

        def call() -> T:
            try:
                return work(conn)
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.rollback()
                raise Unavailable(f"sqlite: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(executor, call)

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            uri=self.path.startswith("file:"),
        )
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if mode != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            exists = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'tidings_meta'").fetchone()
            if exists is None:
                conn.executescript(SCHEMA)
            row = conn.execute("SELECT value FROM tidings_meta WHERE key = 'epoch'").fetchone()
            if row is None:
                conn.execute("INSERT INTO tidings_meta VALUES ('epoch', ?)", (new_epoch(),))
                row = conn.execute("SELECT value FROM tidings_meta WHERE key = 'epoch'").fetchone()
            self.epoch = str(row[0])
        except BaseException:
            conn.close()
            raise
        return conn

    # lifecycle -------------------------------------------------------------------------------

    async def start(self, handler: BrokerHandler) -> None:
        """Open (creating if needed) the file; Unavailable if it cannot be opened."""
        self._handler = handler
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="tidings-sqlite")
        try:
            self._conn = await self._loop.run_in_executor(self._executor, self._open)
        except sqlite3.Error as exc:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise Unavailable(f"sqlite: cannot open {self.path}: {exc}") from exc

    async def close(self) -> None:
        executor, conn = self._executor, self._conn
        self._handler = None
        if executor is not None and conn is not None:
            await asyncio.get_running_loop().run_in_executor(executor, conn.close)
        if executor is not None:
            executor.shutdown(wait=True)
        self._executor, self._conn = None, None

    # publishing --------------------------------------------------------------------------------

    async def publish(
        self,
        channel: str,
        data: Any,
        *,
        event: str,
        options: NamespaceOptions,
        idempotency_key: str | None = None,
        publication_id: str,
        now_ms: int,
        data_json: bytes | None = None,
    ) -> PublishResult:
        try:
            encoded_data = orjson.dumps(data) if data_json is None else data_json
        except TypeError as exc:
            raise BadRequest(f"data is not JSON: {exc}") from exc
        self._publishes += 1
        purge = self._publishes % PURGE_EVERY == 0
        loop = self._loop
        assert loop is not None

        def work(conn: sqlite3.Connection) -> PublishResult:
            conn.execute("BEGIN IMMEDIATE")
            if idempotency_key is not None:
                seen = self._remembered(conn, channel, idempotency_key, now_ms)
                if seen is not None:
                    conn.rollback()
                    return PublishResult(seen, duplicate=True)
            row = conn.execute("SELECT epoch, offset FROM channels WHERE name = ?", (channel,)).fetchone()
            epoch, offset = (str(row[0]), int(row[1]) + 1) if row else (self.epoch, 1)
            publication = Publication(
                channel, offset, epoch, publication_id, now_ms, event, data, data_json=encoded_data
            )
            payload = publication_json(publication)
            conn.execute(
                "INSERT INTO channels VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE "
                "SET offset = excluded.offset",
                (channel, epoch, offset),
            )
            self._append(conn, publication, payload, options, now_ms)
            if idempotency_key is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO idempotency VALUES (?, ?, ?, ?)",
                    (channel, idempotency_key, now_ms, payload),
                )
            if purge:
                horizon = now_ms - int(self.idempotency_window * 1000)
                conn.execute("DELETE FROM idempotency WHERE time < ?", (horizon,))
            conn.execute("COMMIT")
            # FIFO with every other commit's delivery, and ahead of publish's own result.
            loop.call_soon_threadsafe(self._deliver, publication)
            return PublishResult(publication)

        return await self._run(work)

    def _remembered(
        self, conn: sqlite3.Connection, channel: str, key: str, now_ms: int
    ) -> Publication | None:
        row = conn.execute(
            "SELECT time, payload FROM idempotency WHERE channel = ? AND key = ?", (channel, key)
        ).fetchone()
        if row is None or int(row[0]) < now_ms - int(self.idempotency_window * 1000):
            return None
        return _decode(row[1])

    @staticmethod
    def _append(
        conn: sqlite3.Connection,
        publication: Publication,
        payload: bytes,
        options: NamespaceOptions,
        now_ms: int,
    ) -> None:
        channel, offset = publication.channel, publication.offset
        if options.history_size > 0:
            conn.execute("INSERT INTO publications VALUES (?, ?, ?, ?)", (channel, offset, now_ms, payload))
        conn.execute(
            "DELETE FROM publications WHERE channel = ? AND offset <= ?",
            (channel, offset - max(0, options.history_size)),
        )
        if options.history_ttl > 0:
            # Expired rows are an old prefix: find where it ends by walking the primary key from
            # the oldest (cost: the expired rows + 1), then drop the prefix by key range.
            keep = conn.execute(
                "SELECT offset FROM publications WHERE channel = ? AND time >= ? ORDER BY offset LIMIT 1",
                (channel, now_ms - int(options.history_ttl * 1000)),
            ).fetchone()
            conn.execute(
                "DELETE FROM publications WHERE channel = ? AND offset < ?",
                (channel, keep[0] if keep else offset + 1),
            )

    def _deliver(self, publication: Publication) -> None:
        if self._handler is not None:
            self._handler.on_publication(publication)

    async def publish_control(self, channel: str, message: dict[str, Any]) -> None:
        if self._handler is not None:
            self._handler.on_control(channel, message)

    async def subscribe(self, channel: str) -> None:
        return None

    async def unsubscribe(self, channel: str) -> None:
        return None

    # reading ---------------------------------------------------------------------------------

    def _position(self, conn: sqlite3.Connection, channel: str) -> Position:
        row = conn.execute("SELECT epoch, offset FROM channels WHERE name = ?", (channel,)).fetchone()
        return Position(str(row[0]), int(row[1])) if row else Position(self.epoch, 0)

    @staticmethod
    def _horizon(options: NamespaceOptions, now_ms: int) -> int:
        return now_ms - int(options.history_ttl * 1000) if options.history_ttl > 0 else -(2**62)

    async def since(
        self, channel: str, since: Position, limit: int, options: NamespaceOptions, now_ms: int
    ) -> Page | Gap:
        limit = max(1, limit)
        horizon = self._horizon(options, now_ms)

        def work(conn: sqlite3.Connection) -> Page | Gap:
            # One read transaction: the position and the window are one snapshot.
            conn.execute("BEGIN")
            try:
                current = self._position(conn, channel)
                after = (
                    since.offset if (since.epoch == current.epoch and since.offset <= current.offset) else 0
                )
                rows = conn.execute(
                    "SELECT payload FROM publications WHERE channel = ? AND offset > ? "
                    "AND time >= ? ORDER BY offset LIMIT ?",
                    (channel, after, horizon, limit + 1),
                ).fetchall()
            finally:
                conn.execute("COMMIT")
            return resolve_since(channel, since, current, [_decode(r[0]) for r in rows], limit)

        return await self._run(work)

    async def latest(
        self, channel: str, limit: int, options: NamespaceOptions, now_ms: int
    ) -> tuple[list[Publication], Position]:
        horizon = self._horizon(options, now_ms)

        def work(conn: sqlite3.Connection) -> tuple[list[Publication], Position]:
            conn.execute("BEGIN")
            try:
                current = self._position(conn, channel)
                rows = conn.execute(
                    "SELECT payload FROM publications WHERE channel = ? AND time >= ? "
                    "ORDER BY offset DESC LIMIT ?",
                    (channel, horizon, max(0, limit)),
                ).fetchall()
            finally:
                conn.execute("COMMIT")
            return [_decode(r[0]) for r in reversed(rows)], current

        return await self._run(work)

    async def position(self, channel: str) -> Position:
        return await self._run(lambda conn: self._position(conn, channel))

    async def channels(self) -> dict[str, Position]:
        def work(conn: sqlite3.Connection) -> dict[str, Position]:
            rows = conn.execute("SELECT name, epoch, offset FROM channels WHERE offset > 0")
            return {str(name): Position(str(epoch), int(offset)) for name, epoch, offset in rows}

        return await self._run(work)

    async def ping(self) -> None:
        await self._run(lambda conn: conn.execute("SELECT 1").fetchone())


def _decode(payload: bytes) -> Publication:
    return publication_from_json(payload)
