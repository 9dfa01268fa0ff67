"""The admin console lists the node's consumers with their state and lag."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from tests.browser.conftest import API_KEY
from tests.browser.test_admin import open_console
from tests.consumers.pg import PG_URL, unique_table
from tests.redis_server import free_port
from tests.serving import RunningServer, serve
from tidings.outbox import ddl


def sql(statement: str) -> None:
    # psycopg's sync API: Playwright's sync API holds this thread's event loop
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(statement)


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    """This module's node: one consumer of a real outbox, one whose source does not answer."""
    table = unique_table()
    sql(ddl(table))
    consumers = {
        "orders": {"kind": "postgres", "url": PG_URL, "table": table},
        "billing": {
            "kind": "postgres",
            "url": f"postgresql://postgres@127.0.0.1:{free_port()}/x",
            "retry_max": 0.5,
        },
    }
    try:
        with serve(api_key=API_KEY, consumers=consumers) as running:
            yield running
    finally:
        sql(f"DROP TABLE {table}, {table}_dead; DROP FUNCTION {table}_notify() CASCADE")


def test_console_lists_consumers_with_state_and_lag(
    page_for: Callable[..., Any], server: RunningServer
) -> None:
    table = server.node.settings.consumers["orders"].table
    sql(f"INSERT INTO {table} (channel, data) VALUES ('orders:1', '{{}}')")
    page = open_console(page_for)
    row = "#consumers tr[data-consumer='orders']"
    page.wait_for_selector(f"{row} td:text-is('connected')")
    page.wait_for_selector(f"{row} td:nth-child(6):text-is('1')")  # published
    page.wait_for_selector(f"{row} td:nth-child(5):text-is('0')")  # lag
    page.wait_for_selector("#consumers tr[data-consumer='billing'] td:has-text('unreachable')")
