"""The durable side of webhooks: endpoints, the delivery queue, the attempt log, inbound dedup.

:class:`WebhookStore` is the seam; :class:`SQLiteWebhookStore` is the single-node implementation:
one SQLite file in WAL mode (locked to its node) or memory, one connection driven by one worker
thread, so calls are serialised and the event loop never blocks on disk.
:mod:`tidings.webhooks.redis_store` is the one shared by the nodes of a Redis broker.

Contract:

- ``enqueue`` returns only once the message and its deliveries are durable: once it returned, a
  crash of the process (SIGKILL included) loses nothing. With ``synchronous = "full"`` a power
  loss does not either. (SQLite commits the message with the list of its endpoints, one row, in
  the publisher's transaction, and writes the delivery rows from it in a later one; a message
  whose rows were not written yet when the process died gets them when the store opens again.)
- A message's ``id`` is its ``webhook-id``: stable across every attempt and replay. Enqueueing a
  message id again is a no-op (a publication hook called twice delivers once).
- Failures of the backing store raise :class:`tidings.exceptions.Unavailable`.
- ``record_attempt`` appends to the attempt log and moves the delivery (and, on a decision to
  disable, the endpoint) in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from tidings.exceptions import StartupError, Unavailable
from tidings.webhooks.signing import SigningKey

__all__ = [
    "Attempt",
    "AttemptRecord",
    "Delivery",
    "DeliveryStatus",
    "Due",
    "Endpoint",
    "Job",
    "Message",
    "SQLiteWebhookStore",
    "WebhookStore",
]

T = TypeVar("T")
CHECKPOINT_ROWS = 4000  # rows written between two checkpoints (about SQLite's 1,000 pages)
INLINE_GAP = 0.002  # seconds between two commits made on the event loop
LATER_ROWS = 256  # rows of queued background writes (attempt records, fan-out) per group commit
DeliveryStatus = Literal["pending", "succeeded", "failed"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: str
    url: str
    channels: list[str]
    events: list[str] | None = None
    description: str = ""
    enabled: bool = True
    disabled_reason: str | None = None
    keys: list[SigningKey] = field(default_factory=list)
    rate_limit: float | None = None
    max_concurrency: int | None = None
    ordered: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0
    failing_since: float | None = None
    # The application (tidings.webhooks.apps) the endpoint belongs to; None: a channel endpoint.
    app_id: str | None = None

    @property
    def secret(self) -> str:
        """The current secret (the newest key)."""
        return self.keys[-1].secret


@dataclass(frozen=True, slots=True)
class Message:
    """What is sent: ``id`` is the ``webhook-id``; ``body`` the publication JSON."""

    id: str
    channel: str
    event: str
    body: bytes
    created_at: float


@dataclass(frozen=True, slots=True)
class Due:
    """A pending delivery as the dispatcher schedules it; ``seq`` orders by enqueue time.

    ``attempts`` made so far; ``message`` when the dispatcher has it in memory already (a fresh
    enqueue), else the attempt reads it from the store."""

    delivery_id: str
    endpoint_id: str
    seq: int
    due_at: float
    attempts: int = 0
    message: Message | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Job:
    """Everything one attempt needs."""

    delivery_id: str
    attempts: int
    message: Message
    endpoint: Endpoint


@dataclass(frozen=True, slots=True)
class Attempt:
    at: float
    status: int | None
    duration_ms: float
    error: str | None
    response: str
    outcome: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "status": self.status,
            "duration_ms": self.duration_ms,
            "error": self.error,
            "response": self.response,
            "outcome": self.outcome,
        }


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    endpoint_id: str
    webhook_id: str
    channel: str
    event: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: float | None
    created_at: float
    updated_at: float
    last_status: int | None
    last_error: str | None
    # Read by WebhookStore.delivery only: a listing (deliveries) leaves it empty.
    log: list[Attempt] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """What a listing shows (no attempt log)."""
        return {
            "id": self.id,
            "endpoint_id": self.endpoint_id,
            "webhook_id": self.webhook_id,
            "channel": self.channel,
            "event": self.event,
            "status": self.status,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "last_status": self.last_status,
            "last_error": self.last_error,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "attempt_log": [a.to_dict() for a in self.log]}


class WebhookStore(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def put_endpoint(self, endpoint: Endpoint) -> None:
        """Insert or replace."""

    async def get_endpoint(self, endpoint_id: str) -> Endpoint | None: ...
    async def list_endpoints(self) -> list[Endpoint]: ...
    async def delete_endpoint(self, endpoint_id: str) -> bool:
        """Delete the endpoint with its deliveries and attempt log."""

    async def enqueue(self, message: Message, endpoint_ids: Sequence[str]) -> list[Due]:
        """Durable before it returns (see the module docstring)."""

    async def pending(self) -> list[Due]: ...
    async def caught_up(self) -> None:
        """Return once what ``enqueue`` returned so far is visible to another connection (a
        dispatcher process reading the same queue)."""

    async def job(self, delivery_id: str) -> Job | None:
        """The pending delivery's job, or None if it is no longer pending."""

    async def record_attempt(
        self,
        delivery_id: str,
        attempt: Attempt,
        status: DeliveryStatus,
        next_attempt_at: float | None,
        endpoint: Endpoint | None,
    ) -> None:
        """Log ``attempt``, move the delivery to ``status``, store ``endpoint``'s new state
        (if given: it changed)."""

    async def deliveries(
        self, endpoint_id: str, status: DeliveryStatus | None, limit: int, since: float | None = None
    ) -> list[Delivery]: ...
    async def delivery(self, delivery_id: str) -> Delivery | None: ...
    async def replay(
        self, endpoint_id: str, delivery_id: str | None, since: float | None, now: float
    ) -> list[Due]:
        """Make one delivery (any status), or every failed one created since ``since``,
        pending again, due now; the attempt count restarts, the webhook-id is kept."""

    async def remember_inbound(self, receiver: str, delivery_id: str, now: float, ttl: float) -> bool:
        """True if ``delivery_id`` is new for ``receiver`` (and remember it), False if seen."""

    async def forget_inbound(self, receiver: str, delivery_id: str) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS endpoints (
    id TEXT PRIMARY KEY, doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY, channel TEXT NOT NULL, event TEXT NOT NULL, body BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE, endpoint_id TEXT NOT NULL, message_id TEXT NOT NULL,
    status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, last_status INTEGER, last_error TEXT,
    UNIQUE (endpoint_id, message_id)
);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (status, seq);
CREATE INDEX IF NOT EXISTS deliveries_endpoint ON deliveries (endpoint_id, status, created_at);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, delivery_id TEXT NOT NULL, at REAL NOT NULL,
    status INTEGER, duration_ms REAL NOT NULL, error TEXT, response TEXT NOT NULL,
    outcome TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_delivery ON attempts (delivery_id, id);
CREATE TABLE IF NOT EXISTS inbound_seen (
    receiver TEXT NOT NULL, delivery_id TEXT NOT NULL, seen_at REAL NOT NULL,
    PRIMARY KEY (receiver, delivery_id)
);
CREATE INDEX IF NOT EXISTS inbound_seen_at ON inbound_seen (seen_at);
"""


@dataclass(slots=True)
class _Later:
    """A write queued by ``SQLiteWebhookStore._write_later``."""

    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    rows: int
    ids: list[str] = field(default_factory=list)
    items: list[AttemptRecord] = field(default_factory=list)


# delivery id, the attempt, the delivery's new status, its next attempt time, and the endpoint's
# (id, document) when the attempt changed it
AttemptRecord = tuple[str, "Attempt", str, float | None, tuple[str, str] | None]


def _record(db: sqlite3.Connection, records: Sequence[AttemptRecord]) -> None:
    """Log each attempt and move its delivery (and its endpoint, when that changed): one
    statement per kind for the whole batch."""
    db.executemany(
        "INSERT INTO attempts (delivery_id, at, status, duration_ms, error, response, outcome) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (r[0], a.at, a.status, a.duration_ms, a.error, a.response, a.outcome)
            for r in records
            for a in (r[1],)
        ],
    )
    db.executemany(
        "UPDATE deliveries SET status = ?, attempts = attempts + 1, next_attempt_at = ?, "
        "updated_at = ?, last_status = ?, last_error = ? WHERE id = ?",
        [(r[2], r[3], r[1].at, r[1].status, r[1].error, r[0]) for r in records],
    )
    # Only the fields an attempt changes: the endpoint's other fields may have changed meanwhile
    # in another process (the node's, when the dispatcher runs in a process of its own).
    changes = []
    for r in records:
        if r[4] is not None:
            doc = json.loads(r[4][1])
            changes.append(
                (
                    json.dumps(doc["enabled"]),
                    json.dumps(doc["disabled_reason"]),
                    json.dumps(doc["failing_since"]),
                    doc["updated_at"],
                    r[4][0],
                )
            )
    db.executemany(
        "UPDATE endpoints SET doc = json_set(doc, '$.enabled', json(?), '$.disabled_reason', json(?), "
        "'$.failing_since', json(?), '$.updated_at', max(json_extract(doc, '$.updated_at'), ?)) "
        "WHERE id = ?",
        changes,
    )


def delivery_id(message_id: str, endpoint_id: str) -> str:
    return f"dlv_{message_id.removeprefix('msg_')}_{endpoint_id[-12:]}"


def _fan_out(db: sqlite3.Connection, message_ids: Sequence[str]) -> None:
    """Write the delivery rows of ``message_ids`` from their ``targets`` (then cleared): once
    per message, and none for an endpoint deleted meanwhile. A row takes the seq enqueue gave
    its due, unless another row has it (then the next free one)."""
    rows: list[tuple[Any, ...]] = []
    for message_id in message_ids:
        found = db.execute(
            "SELECT targets, created_at FROM messages WHERE id = ? AND targets IS NOT NULL", (message_id,)
        ).fetchone()
        if found is None:
            continue
        targets, at = json.loads(found[0]), found[1]
        for i, endpoint_id in enumerate(targets["endpoints"]):
            seq = targets["seq"] + i
            rows.append(
                (
                    seq,
                    seq,
                    delivery_id(message_id, endpoint_id),
                    endpoint_id,
                    message_id,
                    at,
                    at,
                    at,
                    endpoint_id,
                )
            )
    db.executemany(
        "INSERT OR IGNORE INTO deliveries (seq, id, endpoint_id, message_id, status, next_attempt_at, "
        "created_at, updated_at) SELECT CASE WHEN EXISTS (SELECT 1 FROM deliveries WHERE seq = ?) "
        "THEN NULL ELSE ? END, ?, ?, ?, 'pending', ?, ?, ? "
        "WHERE EXISTS (SELECT 1 FROM endpoints WHERE id = ?)",
        rows,
    )
    db.executemany("UPDATE messages SET targets = NULL WHERE id = ?", [(m,) for m in message_ids])


def _endpoint_doc(endpoint: Endpoint) -> str:
    return json.dumps(
        {
            "id": endpoint.id,
            "url": endpoint.url,
            "channels": endpoint.channels,
            "events": endpoint.events,
            "description": endpoint.description,
            "enabled": endpoint.enabled,
            "disabled_reason": endpoint.disabled_reason,
            "keys": [[k.secret, k.expires_at] for k in endpoint.keys],
            "rate_limit": endpoint.rate_limit,
            "max_concurrency": endpoint.max_concurrency,
            "ordered": endpoint.ordered,
            "created_at": endpoint.created_at,
            "updated_at": endpoint.updated_at,
            "failing_since": endpoint.failing_since,
            "app_id": endpoint.app_id,
        }
    )


def _endpoint_from(doc: str) -> Endpoint:
    value = json.loads(doc)
    value["keys"] = [SigningKey(secret, expires) for secret, expires in value["keys"]]
    return Endpoint(**value)


_DELIVERY_COLUMNS = (
    "d.id, d.endpoint_id, d.message_id, m.channel, m.event, d.status, "
    "d.attempts, d.next_attempt_at, d.created_at, d.updated_at, d.last_status, "
    "d.last_error"
)


def _delivery_from(row: Sequence[Any]) -> Delivery:
    return Delivery(*row)


class SQLiteWebhookStore:
    """See the module docstring; ``path`` is the SQLite file (created if missing), or None for
    a queue in memory (nothing survives the process: for a node whose broker keeps nothing
    either).

    One node at a time: :meth:`open` takes an exclusive lock on ``<path>.lock`` (released by
    :meth:`close`, or by the system when the process dies) and raises StartupError if another
    node holds it. Each node keeps the endpoints and the due deliveries in memory, so two nodes
    on one file would each miss what the other creates.

    ``companion=True``: the store of the node's dispatcher process
    (:mod:`tidings.webhooks.worker`), opened after the node's on the same file. It takes no lock
    (the node holds it), creates nothing and writes nothing: it reads (WAL readers never wait for
    the writer); the node writes the attempt records the dispatcher process sends it
    (:meth:`record_later`). One writer: a publisher's commit never waits for another process's
    transaction (SQLite's busy handler sleeps, on the event loop here, and a niced process
    holding the lock while descheduled would stall every publisher)."""

    def __init__(
        self, path: str | Path | None, *, synchronous: str = "normal", companion: bool = False
    ) -> None:
        self.path = None if path is None else Path(path)
        self.companion = companion
        self.synchronous = synchronous.upper()
        self._lock: int | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="tidings-webhook-store")
        self._db: sqlite3.Connection | None = None
        self._writes: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._later: list[_Later] = []
        self._fan: _Later | None = None  # the queued fan-out that enqueue still adds messages to
        self._records: _Later | None = None  # the queued attempt records, likewise
        self._fanned: asyncio.Future[Any] | None = None  # the last fan-out queued
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False
        self._seq = 0  # the seq the next delivery will get (see enqueue)
        # synchronous=normal commits write the WAL without fsync: done on the event loop itself,
        # they cost less than a hand-off to the worker thread, whose every step waits for the
        # GIL behind a busy loop (measured: docs/topics/webhooks.md). Checkpoints (fsync) run
        # in the worker. synchronous=full fsyncs every commit: that stays in the worker.
        self.inline = self.synchronous == "NORMAL"
        self._checkpointer: sqlite3.Connection | None = None
        self._checkpointing: asyncio.Future[None] | None = None
        self._unchecked = 0

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in a write transaction, grouped with the writes queued meanwhile (one
        commit for the group; each write in its own savepoint, so one failing fails alone)."""
        return await self._queue(fn)

    def _queue(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._writes.append((fn, future))
        self._wake()
        return future

    def _write_later(self, fn: Callable[[sqlite3.Connection], T], rows: int) -> asyncio.Future[T]:
        """Queue ``fn`` (writing about ``rows`` rows) behind the writes of :meth:`_write`: a
        group commit takes every waiting :meth:`_write` but only ``LATER_ROWS`` rows of these,
        so that a publisher's commit never waits for a backlog of attempt records. Writes
        queued here commit in the order they were queued."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._later.append(_Later(fn, future, rows))
        self._wake()
        return future

    def _wake(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self._writes or self._later:
            batch, self._writes = self._writes, []
            rows = 0
            while self._later and (rows < LATER_ROWS or not batch):
                later = self._later.pop(0)
                if later is self._fan:
                    self._fan = None  # taken: the next enqueue queues a new fan-out
                elif later is self._records:
                    self._records = None
                batch.append((later.fn, later.future))
                rows += later.rows

            def run(
                db: sqlite3.Connection,
                batch: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = batch,
            ) -> list[tuple[bool, Any]]:
                results: list[tuple[bool, Any]] = []
                for fn, _ in batch:
                    db.execute("SAVEPOINT w")
                    try:
                        results.append((True, fn(db)))
                        db.execute("RELEASE w")
                    except Exception as exc:
                        db.execute("ROLLBACK TO w")
                        db.execute("RELEASE w")
                        results.append((False, exc))
                return results

            try:
                results = await self._run(lambda db: self._transaction(db, run))
                self._unchecked += len(batch) + rows
                if (
                    self._checkpointer is not None
                    and self._unchecked >= CHECKPOINT_ROWS
                    and (self._checkpointing is None or self._checkpointing.done())
                ):
                    self._checkpoint_now()
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(
                            exc if isinstance(exc, Exception) else RuntimeError("store closed")
                        )
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, future), (ok, value) in zip(batch, results, strict=True):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
            if self.inline:
                # Let the loop run, and the writes of that while queue, between two commits: a
                # commit per loop turn would carry a few rows each and write every page they
                # dirty each time (measured: deliveries stalled behind commits).
                await asyncio.sleep(INLINE_GAP)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._db is None:
                raise Unavailable("the webhook store is not open")
            try:
                return fn(self._db)
            except sqlite3.Error as exc:  # translated once, here
                raise Unavailable(f"webhook store: {exc}") from exc

        if self.inline:
            return call()
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def _checkpoint_now(self) -> None:
        """Copy the WAL into the database file in the worker thread, on a connection of its own
        (a PASSIVE checkpoint never blocks the writer; its fsync is that thread's wait)."""

        def checkpoint() -> None:
            if self._checkpointer is not None:
                with contextlib.suppress(sqlite3.Error):  # busy or closing: the next one catches up
                    self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")

        self._unchecked = 0
        self._checkpointing = asyncio.get_running_loop().run_in_executor(self._executor, checkpoint)

    def _transaction(self, db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        db.execute("BEGIN IMMEDIATE")
        try:
            result = fn(db)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return result

    async def open(self) -> None:
        def connect() -> None:
            if self.path is not None and not self.companion:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._lock = _lock_exclusively(self.path.with_name(self.path.name + ".lock"))
                if self._lock is None:
                    raise StartupError(f"another tidings node uses the webhook store {self.path}")
            db: sqlite3.Connection | None = None
            try:
                db = sqlite3.connect(
                    ":memory:" if self.path is None else self.path,
                    isolation_level=None,
                    check_same_thread=False,
                )
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(f"PRAGMA synchronous={self.synchronous}")
                db.execute("PRAGMA busy_timeout=5000")
                if self.inline and self.path is not None and not self.companion:
                    db.execute("PRAGMA wal_autocheckpoint=0")  # the worker checkpoints
                    self._checkpointer = sqlite3.connect(
                        self.path, isolation_level=None, check_same_thread=False
                    )
                    self._checkpointer.execute("PRAGMA busy_timeout=5000")
                if self.companion:
                    self._db = db
                    return
                db.executescript(_SCHEMA)
                if "targets" not in [row[1] for row in db.execute("PRAGMA table_info(messages)")]:
                    db.execute("ALTER TABLE messages ADD COLUMN targets TEXT")  # a store from before
                db.execute(
                    "CREATE INDEX IF NOT EXISTS messages_unfanned ON messages (id) WHERE targets IS NOT NULL"
                )
                unfanned = [row[0] for row in db.execute("SELECT id FROM messages WHERE targets IS NOT NULL")]
                self._transaction(db, lambda db: _fan_out(db, unfanned))  # those a crash left
                row = db.execute(
                    "SELECT max(seq) FROM (SELECT max(seq) AS seq FROM deliveries UNION ALL "
                    "SELECT seq FROM sqlite_sequence WHERE name = 'deliveries')"
                ).fetchone()
                self._seq = (row[0] or 0) + 1
            except BaseException as exc:
                if db is not None:
                    db.close()
                if self._checkpointer is not None:
                    self._checkpointer.close()
                    self._checkpointer = None
                self._unlock()
                if isinstance(exc, sqlite3.Error):
                    raise Unavailable(f"webhook store {self.path}: {exc}") from exc
                raise
            self._db = db

        await asyncio.get_running_loop().run_in_executor(self._executor, connect)

    def _unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor releases its flock
            self._lock = None

    async def close(self) -> None:
        """Finish queued writes and close (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None and not self._flusher.done():
            await self._flusher

        if self._checkpointing is not None:
            with contextlib.suppress(Exception):
                await self._checkpointing

        def close() -> None:
            if self._checkpointer is not None:
                self._checkpointer.close()
                self._checkpointer = None
            if self._db is not None:
                self._db.close()
                self._db = None
            self._unlock()

        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=True)

    # endpoints ---------------------------------------------------------------------------------

    async def put_endpoint(self, endpoint: Endpoint) -> None:
        doc = _endpoint_doc(endpoint)
        await self._write(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO endpoints (id, doc) VALUES (?, ?)", (endpoint.id, doc)
            )
        )

    async def get_endpoint(self, endpoint_id: str) -> Endpoint | None:
        row = await self._run(
            lambda db: db.execute("SELECT doc FROM endpoints WHERE id = ?", (endpoint_id,)).fetchone()
        )
        return None if row is None else _endpoint_from(row[0])

    async def list_endpoints(self) -> list[Endpoint]:
        rows = await self._run(lambda db: db.execute("SELECT doc FROM endpoints ORDER BY rowid").fetchall())
        return [_endpoint_from(row[0]) for row in rows]

    async def delete_endpoint(self, endpoint_id: str) -> bool:
        await self._caught_up()

        def delete(db: sqlite3.Connection) -> bool:
            cursor = db.execute("DELETE FROM endpoints WHERE id = ?", (endpoint_id,))
            db.execute(
                "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE endpoint_id = ?)",
                (endpoint_id,),
            )
            db.execute("DELETE FROM deliveries WHERE endpoint_id = ?", (endpoint_id,))
            return cursor.rowcount > 0

        return await self._write(delete)

    # the queue ---------------------------------------------------------------------------------

    async def enqueue(self, message: Message, endpoint_ids: Sequence[str]) -> list[Due]:
        """Commits the message with its endpoints (one row, one group commit with the other
        publishers'); the delivery rows follow in a later transaction (:func:`_fan_out`, queued
        now, so before any attempt of theirs is recorded). The ``seq`` of the returned dues is
        the one their rows will get, as long as this store is the only one inserting deliveries
        (it orders an ``ordered`` endpoint's lane; a row's own seq is read back after a restart)."""
        first = self._seq
        self._seq += len(endpoint_ids)
        targets = json.dumps({"seq": first, "endpoints": list(endpoint_ids)})

        def write(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "INSERT OR IGNORE INTO messages (id, channel, event, body, created_at, targets) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (message.id, message.channel, message.event, message.body, message.created_at, targets),
            )
            return cursor.rowcount == 1  # 0: this message was enqueued before

        written = self._queue(write)
        self._later_fan_out(message.id, len(endpoint_ids))
        if not await written:
            return []
        return [
            Due(delivery_id(message.id, endpoint_id), endpoint_id, first + i, message.created_at, 0, message)
            for i, endpoint_id in enumerate(endpoint_ids)
        ]

    def _later_fan_out(self, message_id: str, rows: int) -> None:
        if self._fan is None:
            ids: list[str] = []
            self._fanned = self._write_later(lambda db: _fan_out(db, ids), 0)
            self._fan = self._later[-1]
            self._fan.ids = ids
        self._fan.ids.append(message_id)
        self._fan.rows += rows

    async def _caught_up(self) -> None:
        """Wait until the delivery rows of every message enqueued so far are written."""
        fanned = self._fanned
        if fanned is not None and not fanned.done():
            await asyncio.shield(fanned)

    async def caught_up(self) -> None:
        await self._caught_up()

    async def max_seq(self) -> int:
        """The highest ``seq`` a delivery row has (0: none): every row written later has a
        higher one (only the node's store inserts rows)."""
        await self._caught_up()
        row = await self._run(lambda db: db.execute("SELECT max(seq) FROM deliveries").fetchone())
        return int(row[0] or 0)

    async def pending(self) -> list[Due]:
        await self._caught_up()
        rows = await self._run(
            lambda db: db.execute(
                "SELECT id, endpoint_id, seq, next_attempt_at, attempts FROM deliveries "
                "WHERE status = 'pending' ORDER BY seq"
            ).fetchall()
        )
        return [Due(row[0], row[1], row[2], row[3], row[4]) for row in rows]

    async def job(self, delivery_id: str) -> Job | None:
        await self._caught_up()

        def read(db: sqlite3.Connection) -> Job | None:
            row = db.execute(
                "SELECT d.attempts, m.id, m.channel, m.event, m.body, m.created_at, e.doc "
                "FROM deliveries d JOIN messages m ON m.id = d.message_id "
                "JOIN endpoints e ON e.id = d.endpoint_id "
                "WHERE d.id = ? AND d.status = 'pending'",
                (delivery_id,),
            ).fetchone()
            if row is None:
                return None
            message = Message(row[1], row[2], row[3], bytes(row[4]), row[5])
            return Job(delivery_id, row[0], message, _endpoint_from(row[6]))

        return await self._run(read)

    async def record_attempt(
        self,
        delivery_id: str,
        attempt: Attempt,
        status: DeliveryStatus,
        next_attempt_at: float | None,
        endpoint: Endpoint | None,
    ) -> None:
        record = (
            delivery_id,
            attempt,
            status,
            next_attempt_at,
            None if endpoint is None else (endpoint.id, _endpoint_doc(endpoint)),
        )
        await asyncio.shield(self.record_later([record]))  # one cancelled waiter must not cancel the rest

    def record_later(self, records: Sequence[AttemptRecord]) -> asyncio.Future[Any]:
        """Queue attempt records (``(delivery_id, attempt, status, next_attempt_at, (endpoint_id,
        endpoint_doc) or None)``) into the next group commit of records; the future is that
        commit's. The dispatcher process's records come in this way (see the class docstring)."""
        if self._records is None:
            items: list[AttemptRecord] = []
            self._write_later(lambda db: _record(db, items), 0)
            self._records = self._later[-1]
            self._records.items = items
        self._records.items.extend(records)
        self._records.rows += len(records)
        return self._records.future

    # the log -----------------------------------------------------------------------------------

    async def deliveries(
        self, endpoint_id: str, status: DeliveryStatus | None, limit: int, since: float | None = None
    ) -> list[Delivery]:
        await self._caught_up()
        query = (
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries d "
            "JOIN messages m ON m.id = d.message_id WHERE d.endpoint_id = ?"
        )
        args: list[Any] = [endpoint_id]
        if status is not None:
            query += " AND d.status = ?"
            args.append(status)
        if since is not None:
            query += " AND d.created_at >= ?"
            args.append(since)
        query += " ORDER BY d.seq DESC LIMIT ?"
        args.append(limit)
        rows = await self._run(lambda db: db.execute(query, args).fetchall())
        return [_delivery_from(row) for row in rows]

    async def delivery(self, delivery_id: str) -> Delivery | None:
        await self._caught_up()

        def read(db: sqlite3.Connection) -> Delivery | None:
            row = db.execute(
                f"SELECT {_DELIVERY_COLUMNS} FROM deliveries d "
                "JOIN messages m ON m.id = d.message_id WHERE d.id = ?",
                (delivery_id,),
            ).fetchone()
            if row is None:
                return None
            log = [
                Attempt(*r)
                for r in db.execute(
                    "SELECT at, status, duration_ms, error, response, outcome FROM attempts "
                    "WHERE delivery_id = ? ORDER BY id",
                    (delivery_id,),
                ).fetchall()
            ]
            return replace(_delivery_from(row), log=log)

        return await self._run(read)

    async def replay(
        self, endpoint_id: str, delivery_id: str | None, since: float | None, now: float
    ) -> list[Due]:
        await self._caught_up()

        def write(db: sqlite3.Connection) -> list[Due]:
            if delivery_id is not None:
                rows = db.execute(
                    "SELECT id, seq FROM deliveries WHERE endpoint_id = ? AND id = ?",
                    (endpoint_id, delivery_id),
                ).fetchall()
            else:
                rows = db.execute(
                    "SELECT id, seq FROM deliveries WHERE endpoint_id = ? AND status = 'failed' "
                    "AND created_at >= ? ORDER BY seq",
                    (endpoint_id, since or 0.0),
                ).fetchall()
            for row in rows:
                db.execute(
                    "UPDATE deliveries SET status = 'pending', attempts = 0, "
                    "next_attempt_at = ?, updated_at = ? WHERE id = ?",
                    (now, now, row[0]),
                )
            return [Due(row[0], endpoint_id, row[1], now) for row in rows]

        return await self._write(write)

    # inbound -----------------------------------------------------------------------------------

    async def remember_inbound(self, receiver: str, delivery_id: str, now: float, ttl: float) -> bool:
        def write(db: sqlite3.Connection) -> bool:
            db.execute("DELETE FROM inbound_seen WHERE seen_at < ?", (now - ttl,))
            cursor = db.execute(
                "INSERT OR IGNORE INTO inbound_seen (receiver, delivery_id, seen_at) VALUES (?, ?, ?)",
                (receiver, delivery_id, now),
            )
            return cursor.rowcount == 1

        return await self._write(write)

    async def forget_inbound(self, receiver: str, delivery_id: str) -> None:
        await self._write(
            lambda db: db.execute(
                "DELETE FROM inbound_seen WHERE receiver = ? AND delivery_id = ?", (receiver, delivery_id)
            )
        )


def _lock_exclusively(path: Path) -> int | None:
    """An open descriptor of ``path`` holding an exclusive flock, or None if another holds one.

    flock, not SQLite's own locks: those last a transaction, and a second node would wait for
    them and then carry on beside the first rather than be refused."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def now() -> float:
    return time.time()
