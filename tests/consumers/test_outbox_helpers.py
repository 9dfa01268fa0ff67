"""``tidings.outbox``: a message written in the application's transaction is published once if the
transaction commits, and never if it rolls back; for every library the module serves, against the
real PostgreSQL and a running tidings with a WebSocket subscriber."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import psycopg
import pytest
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from tests.consumers.pg import PG_URL
from tests.serving import serve
from tests.wsclient import WS
from tidings import outbox

ASYNCPG_ENGINE = PG_URL.replace("postgresql://", "postgresql+asyncpg://")
PSYCOPG_ENGINE = PG_URL.replace("postgresql://", "postgresql+psycopg://")


class Rollback(Exception):
    """Raised inside a transaction block to roll it back the way applications do."""


Writer = Callable[[str, Any, bool], Awaitable[None]]


async def with_asyncpg(table: str, data: Any, commit: bool) -> None:
    conn = await asyncpg.connect(PG_URL)
    try:
        async with conn.transaction():
            await outbox.write_asyncpg(conn, "c", data, table=table, event="written")
            if not commit:
                raise Rollback
    except Rollback:
        pass
    finally:
        await conn.close()


async def with_psycopg(table: str, data: Any, commit: bool) -> None:
    def run() -> None:
        with psycopg.connect(PG_URL) as conn:
            outbox.write_psycopg(conn, "c", data, table=table, event="written")
            if not commit:
                conn.rollback()

    await asyncio.to_thread(run)


async def with_psycopg_async(table: str, data: Any, commit: bool) -> None:
    async with await psycopg.AsyncConnection.connect(PG_URL) as conn:
        async with conn.cursor() as cursor:
            await outbox.write_psycopg_async(cursor, "c", data, table=table, event="written")
        if not commit:
            await conn.rollback()


async def with_sqlalchemy(table: str, data: Any, commit: bool) -> None:
    def run() -> None:
        engine = create_engine(PSYCOPG_ENGINE)
        try:
            with Session(engine) as session, session.begin():
                outbox.write_sqlalchemy(session, "c", data, table=table, event="written")
                if not commit:
                    raise Rollback
        except Rollback:
            pass
        finally:
            engine.dispose()

    await asyncio.to_thread(run)


async def with_sqlalchemy_async(table: str, data: Any, commit: bool) -> None:
    engine = create_async_engine(ASYNCPG_ENGINE)
    try:
        async with AsyncSession(engine) as session, session.begin():
            await outbox.write_sqlalchemy_async(session, "c", data, table=table, event="written")
            if not commit:
                raise Rollback
    except Rollback:
        pass
    finally:
        await engine.dispose()


def _django() -> None:
    import django  # here: configured once, for this test module only
    from django.conf import settings

    if not settings.configured:
        host_port = PG_URL.split("@", 1)[1].split("/", 1)[0]
        host, _, port = host_port.partition(":")
        settings.configure(
            DATABASES={
                "default": {
                    "ENGINE": "django.db.backends.postgresql",
                    "NAME": PG_URL.rsplit("/", 1)[1],
                    "USER": "postgres",
                    "HOST": host,
                    "PORT": port or "5432",
                }
            },
            USE_TZ=True,
        )
        django.setup()


async def with_django(table: str, data: Any, commit: bool) -> None:
    def run() -> None:
        _django()
        from django.db import connections, transaction  # here: after settings.configure

        try:
            with transaction.atomic():
                outbox.write_django("c", data, table=table, event="written")
                if not commit:
                    raise Rollback
        except Rollback:
            pass
        finally:
            connections.close_all()

    await asyncio.to_thread(run)


WRITERS: dict[str, Writer] = {
    "asyncpg": with_asyncpg,
    "psycopg": with_psycopg,
    "psycopg_async": with_psycopg_async,
    "sqlalchemy": with_sqlalchemy,
    "sqlalchemy_async": with_sqlalchemy_async,
    "django": with_django,
}


@pytest.mark.parametrize("library", list(WRITERS))
async def test_published_once_when_committed_never_when_rolled_back(library: str, outbox_table: str):
    write = WRITERS[library]
    settings = {"orders": {"kind": "postgres", "url": PG_URL, "table": outbox_table}}
    with serve(consumers=settings) as server:
        async with await WS.open(server.ws_url) as ws:
            reply = await ws.request("subscribe", channel="c")
            assert reply["op"] == "subscribed"
            await write(outbox_table, {"rolled back": library}, False)
            await write(outbox_table, {"committed": library}, True)
            await write(outbox_table, {"rolled back": library, "again": True}, False)
            await write(outbox_table, "the last", True)
            # One partition: in commit order, so nothing rolled back or repeated hides between.
            got = await ws.messages(2)
            assert [(m["event"], m["data"]) for m in got] == [
                ("written", {"committed": library}),
                ("written", "the last"),
            ]
            with pytest.raises(TimeoutError):
                await ws.messages(1, timeout=1.0)


def test_row_refuses_what_the_table_cannot_hold():
    with pytest.raises(ValueError, match="either channel or channels"):
        outbox.row("c", 1, channels=["d"])
    with pytest.raises(ValueError, match="either channel or channels"):
        outbox.row(None, 1)
    with pytest.raises(ValueError, match="not JSON-encodable"):
        outbox.row("c", object())
    with pytest.raises(ValueError, match="not a table name"):
        outbox.ddl("orders; DROP TABLE users")
    assert outbox.row(None, [1], channels=("a", "b"), partition="p") == (
        "p",
        None,
        ["a", "b"],
        "[1]",
        None,
        None,
    )


async def test_a_broadcast_row_reaches_every_channel(outbox_table: str):
    settings = {"orders": {"kind": "postgres", "url": PG_URL, "table": outbox_table}}
    with serve(consumers=settings) as server:
        async with await WS.open(server.ws_url) as ws:
            for channel in ("a", "b"):
                assert (await ws.request("subscribe", channel=channel))["op"] == "subscribed"
            conn = await asyncpg.connect(PG_URL)
            try:
                async with conn.transaction():
                    await outbox.write_asyncpg(conn, None, "both", channels=["a", "b"], table=outbox_table)
            finally:
                await conn.close()
            got = await ws.messages(2)
            assert sorted((m["channel"], m["data"]) for m in got) == [("a", "both"), ("b", "both")]
