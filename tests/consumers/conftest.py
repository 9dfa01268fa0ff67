from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.consumers.pg import PG_URL, create_outbox, drop_outbox, unique_table


@pytest.fixture
async def outbox_table() -> AsyncIterator[str]:
    """A fresh outbox table (with its dead-letter table and trigger) in the shared PostgreSQL."""
    table = unique_table()
    await create_outbox(PG_URL, table)
    try:
        yield table
    finally:
        await drop_outbox(PG_URL, table)
