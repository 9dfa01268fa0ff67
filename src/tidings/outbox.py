"""The application's side of the transactional outbox: write a message in your own transaction.

Write the event into the outbox table **in the same transaction** as the change it reports; the
``postgres`` consumer of a tidings node (``[consumers.NAME]``, ``kind = "postgres"``) publishes it
once the transaction commits, and never if it rolls back. One function per database library,
each taking what that library's transaction runs on::

    async with conn.transaction():                                  # asyncpg
        await conn.execute("UPDATE orders SET state = 'paid' WHERE id = $1", 42)
        await outbox.write_asyncpg(conn, "orders:42", {"state": "paid"})

    with psycopg.connect(dsn) as conn:                              # psycopg 3 (commits at exit)
        outbox.write_psycopg(conn, "orders:42", {"state": "paid"})
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        await outbox.write_psycopg_async(conn, "orders:42", {"state": "paid"})

    with Session(engine) as session, session.begin():               # SQLAlchemy
        outbox.write_sqlalchemy(session, "orders:42", {"state": "paid"})
    async with AsyncSession(engine) as session, session.begin():
        await outbox.write_sqlalchemy_async(session, "orders:42", {"state": "paid"})

    with transaction.atomic():                                      # Django
        outbox.write_django("orders:42", {"state": "paid"})

Every function takes the message's fields as keywords (``event``, ``idempotency_key``,
``channels`` for a broadcast instead of a channel, ``partition`` for the order key, ``table``) and
returns the new row's id. Nothing here imports a database library: each function uses the
connection it is given. The table's DDL is :func:`ddl` (``tidings consumers init NAME`` runs it).

Order: messages with the same ``partition`` are published in the order their transactions
committed (rows of one transaction: in the order written); different partitions concurrently,
possibly by several nodes. Without a partition every message is in partition ``''``, so the
whole table is published in order, by one node at a time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson

__all__ = [
    "DEFAULT_TABLE",
    "ddl",
    "dead_letter_table",
    "notify_channel",
    "row",
    "write_asyncpg",
    "write_django",
    "write_psycopg",
    "write_psycopg_async",
    "write_sqlalchemy",
    "write_sqlalchemy_async",
]

DEFAULT_TABLE = "tidings_outbox"
_TABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}(?:\.[A-Za-z_][A-Za-z0-9_]{0,62})?")
_COLUMNS = ("partition", "channel", "channels", "data", "event", "idempotency_key")


def _table(table: str) -> str:
    if _TABLE_RE.fullmatch(table) is None:
        raise ValueError(f"{table!r} is not a table name ([schema.]name of letters, digits and _)")
    return table


def _base(table: str) -> str:
    return _table(table).rpartition(".")[2]


def dead_letter_table(table: str = DEFAULT_TABLE) -> str:
    """The default dead-letter table of ``table``: ``TABLE_dead``, in the same schema."""
    return f"{_table(table)}_dead"


def notify_channel(table: str = DEFAULT_TABLE) -> str:
    """The LISTEN/NOTIFY channel the trigger of ``table`` notifies on an insert."""
    return f"tidings_{_table(table).replace('.', '_')}"


def ddl(table: str = DEFAULT_TABLE, dead_letter: str = "") -> str:
    """The SQL that creates ``table`` (the outbox), its dead-letter table and the trigger that
    wakes consumers (idempotent: ``IF NOT EXISTS`` / ``OR REPLACE``)."""
    table = _table(table)
    dead = _table(dead_letter) if dead_letter else dead_letter_table(table)
    base = _base(table)
    return f"""\
CREATE TABLE IF NOT EXISTS {table} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    partition text NOT NULL DEFAULT '',
    channel text,
    channels text[],
    data jsonb NOT NULL,
    event text,
    idempotency_key text
);
CREATE INDEX IF NOT EXISTS {base}_partition_id ON {table} (partition, id);
CREATE TABLE IF NOT EXISTS {dead} (
    id bigint PRIMARY KEY,
    created_at timestamptz NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now(),
    partition text NOT NULL,
    channel text,
    channels text[],
    data jsonb,
    event text,
    idempotency_key text,
    error_code text NOT NULL,
    error text NOT NULL
);
CREATE OR REPLACE FUNCTION {table}_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{notify_channel(table)}', '');
    RETURN NULL;
END
$$;
CREATE OR REPLACE TRIGGER {base}_notify AFTER INSERT ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION {table}_notify();
"""


def row(
    channel: str | None,
    data: Any,
    *,
    channels: Sequence[str] | None = None,
    event: str | None = None,
    idempotency_key: str | None = None,
    partition: str = "",
) -> tuple[str, str | None, list[str] | None, str, str | None, str | None]:
    """The column values of one message (``data`` as JSON text), in the order of the INSERT.

    Give ``channel``, or ``channel=None`` and ``channels`` for a broadcast. Raises ValueError
    when both or neither are given, or ``data`` is not JSON-encodable (the consumer checks the
    rest, channel names and sizes, and dead-letters what it cannot publish).
    """
    if (channel is None) == (channels is None):
        raise ValueError("give either channel or channels")
    try:
        data_json = orjson.dumps(data).decode()
    except TypeError as exc:
        raise ValueError(f"data is not JSON-encodable: {exc}") from None
    return (
        partition,
        channel,
        list(channels) if channels is not None else None,
        data_json,
        event,
        idempotency_key,
    )


def _insert(table: str, placeholders: Sequence[str]) -> str:
    values = ", ".join(placeholders)
    return f"INSERT INTO {_table(table)} ({', '.join(_COLUMNS)}) VALUES ({values}) RETURNING id"


_POSITIONAL = ("$1", "$2", "$3::text[]", "$4::jsonb", "$5", "$6")
_PYFORMAT = ("%s", "%s", "%s::text[]", "%s::jsonb", "%s", "%s")
_NAMED = tuple(
    f"CAST(:{name} AS {kind})"
    for name, kind in zip(_COLUMNS, ("text", "text", "text[]", "jsonb", "text", "text"), strict=True)
)


async def write_asyncpg(
    conn: Any,
    channel: str | None,
    data: Any,
    *,
    table: str = DEFAULT_TABLE,
    **fields: Any,
) -> int:
    """Write one message on an asyncpg connection (inside ``async with conn.transaction()``)."""
    rowid: int = await conn.fetchval(_insert(table, _POSITIONAL), *row(channel, data, **fields))
    return rowid


def write_psycopg(
    conn: Any, channel: str | None, data: Any, *, table: str = DEFAULT_TABLE, **fields: Any
) -> int:
    """Write one message on a psycopg 3 connection or cursor, in its current transaction."""
    cursor = conn.execute(_insert(table, _PYFORMAT), row(channel, data, **fields))
    rowid: int = cursor.fetchone()[0]
    return rowid


async def write_psycopg_async(
    conn: Any, channel: str | None, data: Any, *, table: str = DEFAULT_TABLE, **fields: Any
) -> int:
    """Write one message on a psycopg 3 ``AsyncConnection`` or ``AsyncCursor``."""
    cursor = await conn.execute(_insert(table, _PYFORMAT), row(channel, data, **fields))
    rowid: int = (await cursor.fetchone())[0]
    return rowid


def _sqlalchemy_statement(
    table: str, channel: str | None, data: Any, fields: dict[str, Any]
) -> tuple[Any, Any]:
    from sqlalchemy import text  # the caller uses SQLAlchemy: it is installed

    values = dict(zip(_COLUMNS, row(channel, data, **fields), strict=True))
    return text(_insert(table, _NAMED)), values


def write_sqlalchemy(
    session: Any, channel: str | None, data: Any, *, table: str = DEFAULT_TABLE, **fields: Any
) -> int:
    """Write one message through a SQLAlchemy ``Session`` or ``Connection`` (PostgreSQL)."""
    statement, values = _sqlalchemy_statement(table, channel, data, fields)
    rowid: int = session.execute(statement, values).scalar_one()
    return rowid


async def write_sqlalchemy_async(
    session: Any, channel: str | None, data: Any, *, table: str = DEFAULT_TABLE, **fields: Any
) -> int:
    """Write one message through a SQLAlchemy ``AsyncSession`` or ``AsyncConnection``."""
    statement, values = _sqlalchemy_statement(table, channel, data, fields)
    rowid: int = (await session.execute(statement, values)).scalar_one()
    return rowid


def write_django(
    channel: str | None, data: Any, *, using: str = "default", table: str = DEFAULT_TABLE, **fields: Any
) -> int:
    """Write one message on Django's connection ``using``, inside ``transaction.atomic()``
    (outside one, Django's autocommit commits it at once)."""
    from django.db import connections  # the caller uses Django: it is installed

    with connections[using].cursor() as cursor:
        cursor.execute(_insert(table, _PYFORMAT), row(channel, data, **fields))
        rowid: int = cursor.fetchone()[0]
    return rowid
