"""The durable side of applications: apps, the event-type catalog, app messages, the portal key.

Kept beside the delivery queue, in the same place: :class:`SQLiteAppStore` adds tables to the
:class:`~tidings.webhooks.store.SQLiteWebhookStore`'s file (same connection and worker thread,
so its writes join the queue's grouped commits), :class:`RedisAppStore` adds keys under the
:class:`~tidings.webhooks.redis_store.RedisWebhookStore`'s hash tag (one cluster slot):

- ``…:apps``: hash app id → app JSON; ``…:event_types``: hash name → event type JSON;
- ``…:appmsg:<app>``: hash message id → message JSON, ``…:appmsgs:<app>``: zset id → time;
- ``…:portal_key``: the secret that signs portal tokens (made once, shared by every node).

Contract: records are JSON documents, read back as written. ``add_message`` keeps the first
record of an id (the idempotency of ``POST …/messages``) and returns the stored one. Nothing here
caches: every node reads the same records. Failures raise :class:`tidings.exceptions.Unavailable`.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import orjson

from tidings.exceptions import Unavailable
from tidings.webhooks.redis_store import RedisWebhookStore, _s
from tidings.webhooks.store import SQLiteWebhookStore, WebhookStore

__all__ = ["App", "AppMessage", "AppStore", "EventType", "app_store_for"]


@dataclass(frozen=True, slots=True)
class App:
    """One customer of the provider: its endpoints and messages hang under ``id``."""

    id: str
    name: str
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0
    # portal tokens issued before this time are refused (DELETE …/apps/{app}/portal)
    portal_not_before: float = 0.0


@dataclass(frozen=True, slots=True)
class EventType:
    """An entry of the catalog; ``schema`` (JSON Schema) checks the payload of its messages."""

    name: str
    description: str = ""
    schema: dict[str, Any] | None = None
    archived: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class AppMessage:
    """A message sent to an app: ``id`` is its ``webhook-id``; ``body`` the exact bytes sent
    (as text); ``deliveries`` the delivery ids made for it (one per endpoint that took it)."""

    id: str
    app_id: str
    event_type: str
    payload: Any
    body: str
    created_at: float
    idempotency_key: str | None = None
    deliveries: list[str] = field(default_factory=list)


def _dump(record: Any) -> bytes:
    return orjson.dumps(asdict(record))


class AppStore(Protocol):
    async def open(self) -> None:
        """Prepare the tables (after the queue's store opened)."""

    async def create_app(self, app: App) -> bool:
        """Insert ``app``; False (and nothing written) if its id exists."""

    async def put_app(self, app: App) -> None: ...
    async def get_app(self, app_id: str) -> App | None: ...
    async def list_apps(self) -> list[App]: ...
    async def delete_app(self, app_id: str) -> bool:
        """Delete the app and its messages (its endpoints are the caller's to delete)."""

    async def create_event_type(self, event_type: EventType) -> bool:
        """Insert; False (and nothing written) if the name exists."""

    async def put_event_type(self, event_type: EventType) -> None: ...
    async def get_event_type(self, name: str) -> EventType | None: ...
    async def list_event_types(self) -> list[EventType]: ...
    async def add_message(self, message: AppMessage) -> AppMessage:
        """Store ``message`` unless its id is stored; return the stored record."""

    async def get_message(self, app_id: str, message_id: str) -> AppMessage | None: ...
    async def list_messages(self, app_id: str, limit: int, before: float | None = None) -> list[AppMessage]:
        """Newest first; ``before``: created strictly before (paging)."""

    async def portal_key(self) -> str:
        """The portal tokens' signing secret (made on first call, the same ever after)."""


def app_store_for(store: WebhookStore) -> AppStore:
    """The app store living beside the queue ``store``."""
    if isinstance(store, SQLiteWebhookStore):
        return SQLiteAppStore(store)
    if isinstance(store, RedisWebhookStore):
        return RedisAppStore(store)
    raise TypeError(f"no application store for {type(store).__name__}")


_TABLES = (
    "CREATE TABLE IF NOT EXISTS apps (id TEXT PRIMARY KEY, created_at REAL NOT NULL, doc BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS event_types (name TEXT PRIMARY KEY, doc BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS app_messages (id TEXT NOT NULL, app_id TEXT NOT NULL, "
    "created_at REAL NOT NULL, doc BLOB NOT NULL, PRIMARY KEY (app_id, id))",
    "CREATE INDEX IF NOT EXISTS app_messages_time ON app_messages (app_id, created_at)",
    "CREATE TABLE IF NOT EXISTS portal_keys (id INTEGER PRIMARY KEY CHECK (id = 1), secret TEXT NOT NULL)",
)


class SQLiteAppStore:
    """See the module docstring; rides on ``store``'s connection (open it first)."""

    def __init__(self, store: SQLiteWebhookStore) -> None:
        self._store = store

    async def open(self) -> None:
        def create(db: sqlite3.Connection) -> None:
            for statement in _TABLES:
                db.execute(statement)

        await self._store._write(create)

    async def _insert(self, sql: str, args: Sequence[Any]) -> bool:
        def write(db: sqlite3.Connection) -> bool:
            return db.execute(sql, args).rowcount == 1

        return await self._store._write(write)

    async def _all(self, sql: str, args: Sequence[Any] = ()) -> list[bytes]:
        rows = await self._store._run(lambda db: db.execute(sql, args).fetchall())
        return [bytes(row[0]) for row in rows]

    async def _one(self, sql: str, args: Sequence[Any]) -> bytes | None:
        found = await self._all(sql, args)
        return found[0] if found else None

    async def create_app(self, app: App) -> bool:
        return await self._insert(
            "INSERT OR IGNORE INTO apps (id, created_at, doc) VALUES (?, ?, ?)",
            (app.id, app.created_at, _dump(app)),
        )

    async def put_app(self, app: App) -> None:
        await self._insert(
            "INSERT OR REPLACE INTO apps (id, created_at, doc) VALUES (?, ?, ?)",
            (app.id, app.created_at, _dump(app)),
        )

    async def get_app(self, app_id: str) -> App | None:
        doc = await self._one("SELECT doc FROM apps WHERE id = ?", (app_id,))
        return None if doc is None else App(**orjson.loads(doc))

    async def list_apps(self) -> list[App]:
        return [App(**orjson.loads(d)) for d in await self._all("SELECT doc FROM apps ORDER BY created_at")]

    async def delete_app(self, app_id: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            db.execute("DELETE FROM app_messages WHERE app_id = ?", (app_id,))
            return db.execute("DELETE FROM apps WHERE id = ?", (app_id,)).rowcount == 1

        return await self._store._write(delete)

    async def create_event_type(self, event_type: EventType) -> bool:
        return await self._insert(
            "INSERT OR IGNORE INTO event_types (name, doc) VALUES (?, ?)",
            (event_type.name, _dump(event_type)),
        )

    async def put_event_type(self, event_type: EventType) -> None:
        await self._insert(
            "INSERT OR REPLACE INTO event_types (name, doc) VALUES (?, ?)",
            (event_type.name, _dump(event_type)),
        )

    async def get_event_type(self, name: str) -> EventType | None:
        doc = await self._one("SELECT doc FROM event_types WHERE name = ?", (name,))
        return None if doc is None else EventType(**orjson.loads(doc))

    async def list_event_types(self) -> list[EventType]:
        docs = await self._all("SELECT doc FROM event_types ORDER BY name")
        return [EventType(**orjson.loads(d)) for d in docs]

    async def add_message(self, message: AppMessage) -> AppMessage:
        if await self._insert(
            "INSERT OR IGNORE INTO app_messages (id, app_id, created_at, doc) VALUES (?, ?, ?, ?)",
            (message.id, message.app_id, message.created_at, _dump(message)),
        ):
            return message
        stored = await self.get_message(message.app_id, message.id)
        if stored is None:  # deleted with its app meanwhile
            raise Unavailable("the application was deleted while the message was stored")
        return stored

    async def get_message(self, app_id: str, message_id: str) -> AppMessage | None:
        doc = await self._one(
            "SELECT doc FROM app_messages WHERE app_id = ? AND id = ?", (app_id, message_id)
        )
        return None if doc is None else AppMessage(**orjson.loads(doc))

    async def list_messages(self, app_id: str, limit: int, before: float | None = None) -> list[AppMessage]:
        docs = await self._all(
            "SELECT doc FROM app_messages WHERE app_id = ? AND created_at < ? "
            "ORDER BY created_at DESC LIMIT ?",
            (app_id, float("inf") if before is None else before, limit),
        )
        return [AppMessage(**orjson.loads(d)) for d in docs]

    async def portal_key(self) -> str:
        await self._insert(
            "INSERT OR IGNORE INTO portal_keys (id, secret) VALUES (1, ?)", (secrets.token_urlsafe(32),)
        )
        rows = await self._store._run(lambda db: db.execute("SELECT secret FROM portal_keys").fetchall())
        return str(rows[0][0])


class RedisAppStore:
    """See the module docstring; shares ``store``'s client and prefix."""

    def __init__(self, store: RedisWebhookStore) -> None:
        self._redis = store._redis
        self._gate = store._gate
        prefix = store._p
        self._k_apps = f"{prefix}:apps"
        self._k_types = f"{prefix}:event_types"
        self._k_key = f"{prefix}:portal_key"
        self._p = prefix

    def _msgs(self, app_id: str) -> tuple[str, str]:
        return f"{self._p}:appmsg:{app_id}", f"{self._p}:appmsgs:{app_id}"

    async def open(self) -> None:
        return None

    # apps and event types: one JSON document per field of one hash each
    async def _create(self, key: str, field: str, record: Any, what: str) -> bool:
        async with self._gate(f"{what} create"):
            return bool(await self._redis.hsetnx(key, field, _dump(record)))

    async def _put(self, key: str, field: str, record: Any, what: str) -> None:
        async with self._gate(f"{what} put"):
            await self._redis.hset(key, field, _dump(record))

    async def _get(self, key: str, field: str, what: str) -> dict[str, Any] | None:
        async with self._gate(f"{what} get"):
            doc = await self._redis.hget(key, field)
        return None if doc is None else dict(orjson.loads(doc))

    async def _every(self, key: str, what: str) -> list[dict[str, Any]]:
        async with self._gate(f"{what} list"):
            return [dict(orjson.loads(d)) for d in await self._redis.hvals(key)]

    async def create_app(self, app: App) -> bool:
        return await self._create(self._k_apps, app.id, app, "app")

    async def put_app(self, app: App) -> None:
        await self._put(self._k_apps, app.id, app, "app")

    async def get_app(self, app_id: str) -> App | None:
        doc = await self._get(self._k_apps, app_id, "app")
        return None if doc is None else App(**doc)

    async def list_apps(self) -> list[App]:
        return sorted((App(**d) for d in await self._every(self._k_apps, "app")), key=lambda a: a.created_at)

    async def delete_app(self, app_id: str) -> bool:
        async with self._gate("app delete"):
            await self._redis.delete(*self._msgs(app_id))
            return bool(await self._redis.hdel(self._k_apps, app_id))

    async def create_event_type(self, event_type: EventType) -> bool:
        return await self._create(self._k_types, event_type.name, event_type, "event type")

    async def put_event_type(self, event_type: EventType) -> None:
        await self._put(self._k_types, event_type.name, event_type, "event type")

    async def get_event_type(self, name: str) -> EventType | None:
        doc = await self._get(self._k_types, name, "event type")
        return None if doc is None else EventType(**doc)

    async def list_event_types(self) -> list[EventType]:
        found = (EventType(**d) for d in await self._every(self._k_types, "event type"))
        return sorted(found, key=lambda t: t.name)

    async def add_message(self, message: AppMessage) -> AppMessage:
        records, index = self._msgs(message.app_id)
        async with self._gate("app message add"):
            added = await self._redis.hsetnx(records, message.id, _dump(message))
            # Always (not only when new): a retry after a crash between the two completes it.
            await self._redis.zadd(index, {message.id: message.created_at}, nx=True)
        if added:
            return message
        stored = await self.get_message(message.app_id, message.id)
        if stored is None:  # deleted with its app meanwhile
            raise Unavailable("the application was deleted while the message was stored")
        return stored

    async def get_message(self, app_id: str, message_id: str) -> AppMessage | None:
        async with self._gate("app message get"):
            doc = await self._redis.hget(self._msgs(app_id)[0], message_id)
        return None if doc is None else AppMessage(**orjson.loads(doc))

    async def list_messages(self, app_id: str, limit: int, before: float | None = None) -> list[AppMessage]:
        records, index = self._msgs(app_id)
        async with self._gate("app message list"):
            found = await self._redis.zrevrangebyscore(
                index, "+inf" if before is None else f"({before!r}", "-inf", start=0, num=limit
            )
            ids = [_s(i) for i in found]
            docs = await self._redis.hmget(records, ids) if ids else []
        return [AppMessage(**orjson.loads(d)) for d in docs if d is not None]

    async def portal_key(self) -> str:
        async with self._gate("portal key"):
            await self._redis.set(self._k_key, secrets.token_urlsafe(32), nx=True)
            key = await self._redis.get(self._k_key)
        return key.decode() if isinstance(key, bytes) else str(key)
