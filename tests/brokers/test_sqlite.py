"""The SQLite broker: the conformance suite, durability across restarts, and disk failures."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from tests.brokers.conformance import (
    OPTIONS,
    T0,
    BrokerConformance,
    BrokerFactory,
    Recorder,
    publish,
)
from tidings.brokers.sqlite import SQLiteBroker
from tidings.core.events import Page
from tidings.core.permissions import NamespaceOptions
from tidings.core.position import Position
from tidings.exceptions import Unavailable
from tidings.node import Node, make_broker
from tidings.settings import Settings


class TestSQLiteBroker(BrokerConformance):
    multi_node = False

    @pytest.fixture
    def broker_factory(self, tmp_path: Path) -> BrokerFactory:
        return lambda: SQLiteBroker(str(tmp_path / "tidings.db"))


async def started(path: Path | str, **kwargs: float) -> tuple[SQLiteBroker, Recorder]:
    broker = SQLiteBroker(str(path), **kwargs)
    recorder = Recorder()
    await broker.start(recorder)
    return broker, recorder


async def test_history_epoch_and_offsets_survive_a_restart(tmp_path: Path) -> None:
    broker, _ = await started(tmp_path / "t.db")
    for i in range(5):
        await publish(broker, "durable", i)
    before = await broker.position("durable")
    await broker.close()

    again, _ = await started(tmp_path / "t.db")
    try:
        assert await again.position("durable") == before
        page = await again.since("durable", Position(before.epoch, 2), 10, OPTIONS, T0)
        assert isinstance(page, Page)
        assert [p.data for p in page.publications] == [2, 3, 4]
        nxt = await publish(again, "durable", 5)
        assert nxt.position == Position(before.epoch, 6)
        assert await again.channels() == {"durable": nxt.position}
    finally:
        await again.close()


async def test_a_new_file_means_a_new_epoch(tmp_path: Path) -> None:
    one, _ = await started(tmp_path / "one.db")
    two, _ = await started(tmp_path / "two.db")
    try:
        assert (await one.position("c")).epoch != (await two.position("c")).epoch
    finally:
        await one.close()
        await two.close()


async def test_idempotency_keys_are_forgotten_after_the_window(tmp_path: Path) -> None:
    broker, _ = await started(tmp_path / "t.db", idempotency_window=1.0)
    try:
        first = await publish(broker, "w", 1, key="k", at=T0)
        same = await publish(broker, "w", 2, key="k", at=T0 + 900)
        later = await publish(broker, "w", 3, key="k", at=T0 + 1500)
        assert same == first
        assert later.offset == 2
        assert later.data == 3
    finally:
        await broker.close()


async def test_statements_run_off_the_event_loop_thread(tmp_path: Path) -> None:
    broker, _ = await started(tmp_path / "t.db")
    try:
        seen: list[str] = []

        def probe(conn: sqlite3.Connection) -> None:
            seen.append(threading.current_thread().name)

        await broker._run(probe)
        assert seen
        assert seen[0] != threading.current_thread().name
    finally:
        await broker.close()


async def test_a_full_disk_raises_unavailable_and_writes_nothing(tmp_path: Path) -> None:
    broker, _ = await started(tmp_path / "t.db")
    try:
        await publish(broker, "full", "x")
        before = await broker.position("full")

        def fill_to_the_brim(conn: sqlite3.Connection) -> None:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages}")

        await broker._run(fill_to_the_brim)
        with pytest.raises(Unavailable):
            await publish(broker, "full", "y" * 100_000)
        assert await broker.position("full") == before
        pubs, _ = await broker.latest("full", 10, OPTIONS, T0)
        assert [p.data for p in pubs] == ["x"]
    finally:
        await broker.close()


async def test_a_read_only_file_raises_unavailable_from_publish(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    broker, _ = await started(path)
    await publish(broker, "ro", 1)
    await broker.close()

    readonly, _ = await started(f"file:{path}?mode=ro")
    try:
        with pytest.raises(Unavailable):
            await publish(readonly, "ro", 2)
        assert (await readonly.position("ro")).offset == 1
    finally:
        await readonly.close()


async def test_a_file_that_cannot_be_opened_raises_unavailable(tmp_path: Path) -> None:
    broker = SQLiteBroker(str(tmp_path / "missing" / "dir" / "t.db"))
    with pytest.raises(Unavailable):
        await broker.start(Recorder())


async def test_handlers_see_concurrent_publishes_in_offset_order(tmp_path: Path) -> None:
    broker, recorder = await started(tmp_path / "t.db")
    try:
        results = await asyncio.gather(*[publish(broker, "order", i) for i in range(40)])
        assert recorder.offsets("order") == list(range(1, 41))
        assert sorted(p.offset for p in results) == list(range(1, 41))
    finally:
        await broker.close()


async def test_the_node_builds_a_sqlite_broker_from_a_sqlite_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings(broker="sqlite:///node.db")
    broker = make_broker(settings)
    assert isinstance(broker, SQLiteBroker)
    async with Node(settings, broker=broker) as node:
        result = await node.publish("chat:lobby", {"text": "hi"})
        assert result.publication.offset == 1
    assert (tmp_path / "node.db").exists()


async def test_publish_deletes_rows_beyond_the_size_and_older_than_the_ttl(tmp_path: Path) -> None:
    broker, _ = await started(tmp_path / "t.db")
    options = NamespaceOptions(history_size=5, history_ttl=1)
    try:
        for i in range(8):
            await publish(broker, "rows", i, options=options, at=T0 + i)
        await publish(broker, "rows", "late", options=options, at=T0 + 1005)

        def stored(conn: sqlite3.Connection) -> list[int]:
            rows = conn.execute(
                "SELECT offset FROM publications WHERE channel = 'rows' ORDER BY offset"
            ).fetchall()
            return [int(r[0]) for r in rows]

        # Size keeps 5..9; the TTL (horizon T0+5) then drops offsets 5 (T0+4).
        assert await broker._run(stored) == [6, 7, 8, 9]
    finally:
        await broker.close()
