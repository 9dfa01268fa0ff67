"""``tidings consumers init NAME`` and ``tidings consumers status``, run as a user would."""

from __future__ import annotations

import json
from pathlib import Path

import asyncpg

from tests.consumers.pg import PG_URL, drop_outbox, unique_table
from tests.redis_server import free_port
from tests.serving import serve
from tests.test_cli import tidings


def config(tmp_path: Path, table: str, url: str = PG_URL) -> str:
    path = tmp_path / "tidings.toml"
    path.write_text(f'[consumers.orders]\nkind = "postgres"\nurl = "{url}"\ntable = "{table}"\n')
    return str(path)


async def test_init_creates_the_outbox_once_and_status_shows_its_lag(tmp_path: Path):
    table = unique_table()
    path = config(tmp_path, table)
    try:
        first = tidings("consumers", "init", "orders", "--config", path)
        assert first.returncode == 0, first.stderr
        assert f"table {table} (outbox)" in first.stdout and "consumer orders is ready" in first.stdout
        again = tidings("consumers", "init", "orders", "--config", path)  # idempotent
        assert again.returncode == 0, again.stderr
        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(f"INSERT INTO {table} (channel, data) VALUES ('c', '1'), ('c', '2')")
        finally:
            await conn.close()
        status = tidings("consumers", "status", "--config", path, "--json")
        assert status.returncode == 0, status.stderr
        row = json.loads(status.stdout)
        assert (row["name"], row["connected"], row["lag"]) == ("orders", True, 2)
        shown = tidings("consumers", "status", "--config", path, columns=200)
        assert "orders" in shown.stdout and "yes" in shown.stdout
    finally:
        await drop_outbox(PG_URL, table)


def test_init_sql_prints_the_ddl_and_runs_nothing(tmp_path: Path):
    result = tidings("consumers", "init", "orders", "--sql", "--config", config(tmp_path, "shop.events"))
    assert result.returncode == 0
    assert "CREATE TABLE IF NOT EXISTS shop.events (" in result.stdout
    assert "CREATE TABLE IF NOT EXISTS shop.events_dead (" in result.stdout
    assert "pg_notify('tidings_shop_events', '')" in result.stdout


def test_status_fails_for_a_source_that_does_not_answer_or_a_missing_table(tmp_path: Path):
    down = tidings(
        "consumers",
        "status",
        "--json",
        "--config",
        config(tmp_path, "t", f"postgresql://postgres@127.0.0.1:{free_port()}/x"),
    )
    assert down.returncode == 1
    assert json.loads(down.stdout)["connected"] is False
    missing = tidings("consumers", "status", "--json", "--config", config(tmp_path, unique_table()))
    assert missing.returncode == 1
    assert "does not exist: run `tidings consumers init orders`" in json.loads(missing.stdout)["error"]


def test_an_unknown_consumer_or_bad_settings_are_explained(tmp_path: Path):
    unknown = tidings("consumers", "init", "nope", "--config", config(tmp_path, "t"), columns=200)
    assert unknown.returncode == 2
    assert "no consumer 'nope'" in unknown.stderr and "[consumers.nope]" in unknown.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[consumers.orders]\nkind = "postgres"\nurl = "redis://x"\n')
    result = tidings("consumers", "status", "--config", str(bad), columns=200)
    assert result.returncode == 2
    assert "consumers.orders.url: kind postgres needs a URL starting with postgresql://" in result.stderr


def test_status_of_a_running_node(outbox_table: str):
    settings = {"orders": {"kind": "postgres", "url": PG_URL, "table": outbox_table}}
    with serve(consumers=settings) as server:
        result = tidings("consumers", "status", "--server", server.url, "--json")
        assert result.returncode == 0, result.stderr
        row = json.loads(result.stdout)
        assert (row["name"], row["kind"], row["published"]) == ("orders", "postgres", 0)
    with serve() as server:
        assert tidings("consumers", "status", "--server", server.url).stdout.startswith("no consumers")
