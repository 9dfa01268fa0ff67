"""Proof under faults (issue 21, item 5) for the PostgreSQL outbox: N messages are written while
tidings is SIGKILLed twice and PostgreSQL is restarted once; subscribers over WebSocket and SSE get
every committed message exactly once, in order per partition, and no rolled-back one.

Each committed message is also recorded in a ledger table in the same transaction, so the producer
knows what committed even when PostgreSQL goes away during a COMMIT. The node runs ``tidings
serve`` as a subprocess (``tests/nodes.py``) on a Redis broker of its own (history and idempotency
keys outlive the node, as they would in production); PostgreSQL is a private server (Debian's
``pg_ctl``) so that it can be restarted.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.consumers.pg import PrivatePostgres, create_outbox
from tests.nodes import NodeProcess
from tests.redis_server import RedisServer
from tidings import outbox
from tidings.client import Client
from tidings.core.events import Publication
from tidings.core.position import Position

PARTITIONS = 4
TABLE = "faults_outbox"


class Producer:
    """Writes messages (p, i) in order per partition, one transaction each; every seventh
    transaction is rolled back instead. Survives PostgreSQL restarts: after an error it reconnects
    and asks the ledger whether the message committed."""

    def __init__(self, url: str, per_partition: int) -> None:
        self.url = url
        self.per_partition = per_partition
        self.committed: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
        self.done = 0
        self.rolled_back = 0
        self.conn: Any = None
        self.marks: dict[int, asyncio.Event] = {}

    def reached(self, count: int) -> asyncio.Event:
        """Set once ``count`` messages committed (or the producer ended)."""
        return self.marks.setdefault(count, asyncio.Event())

    async def _connect(self) -> Any:
        while True:
            try:
                return await asyncpg.connect(self.url, timeout=5)
            except (OSError, asyncpg.PostgresError):
                await asyncio.sleep(0.2)

    async def _write(self, p: int, i: int, commit: bool) -> None:
        async with self.conn.transaction():
            data = {"p": p, "i": i} if commit else {"p": p, "i": i, "rolled_back": True}
            await outbox.write_asyncpg(self.conn, f"p:{p}", data, table=TABLE, partition=str(p))
            await self.conn.execute("INSERT INTO ledger (p, i) VALUES ($1, $2)", p, i)
            if not commit:
                raise _Rollback

    async def _committed(self, p: int, i: int) -> bool:
        return bool(await self.conn.fetchval("SELECT count(*) FROM ledger WHERE p = $1 AND i = $2", p, i))

    async def run(self) -> None:
        try:
            await self._produce()
        finally:  # a failed producer must not leave the faults waiting for it
            for mark in self.marks.values():
                mark.set()

    async def _produce(self) -> None:
        self.conn = await self._connect()
        count = 0
        for i in range(self.per_partition):
            for p in range(PARTITIONS):
                count += 1
                if count % 7 == 0:
                    await self._attempt(p, i, commit=False)
                    self.rolled_back += 1
                await self._attempt(p, i, commit=True)
                self.committed[p].append(i)
                self.done += 1
                if self.done in self.marks:
                    self.marks[self.done].set()
        await self.conn.close()

    async def _attempt(self, p: int, i: int, commit: bool) -> None:
        while True:
            try:
                await self._write(p, i, commit)
                return
            except _Rollback:
                return
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                self.conn.terminate()
                self.conn = await self._connect()
                if commit and await self._committed(p, i):
                    return  # the COMMIT went through before the connection was lost


class _Rollback(Exception):
    pass


async def collect(sub: Any, into: list[dict[str, Any]]) -> None:
    async for item in sub:
        assert isinstance(item, Publication), f"a gap: {item}"
        into.append(item.data)


def start_node(broker: str, config: Path, port: int | None = None) -> NodeProcess:
    return NodeProcess(broker=broker, port=port, env={"TIDINGS_CONFIG": str(config)}).start(timeout=60)


async def prove(tmp_path: Path, per_partition: int) -> None:
    total = per_partition * PARTITIONS
    with PrivatePostgres() as pg, RedisServer() as redis:
        await create_outbox(pg.url, TABLE)
        conn = await asyncpg.connect(pg.url)
        await conn.execute("CREATE TABLE ledger (p int, i int, PRIMARY KEY (p, i))")
        await conn.close()
        config = tmp_path / "tidings.toml"
        config.write_text(
            f"""
[namespaces.p]
history_size = {per_partition + 10}
history_ttl = 0

[consumers.orders]
kind = "postgres"
url = "{pg.url}"
table = "{TABLE}"
batch_size = 50
poll_interval = 0.5
retry_base = 0.1
retry_max = 1.0
"""
        )
        broker = f"redis://127.0.0.1:{redis.port}/0"
        node = await asyncio.to_thread(start_node, broker, config)
        received: dict[tuple[str, int], list[dict[str, Any]]] = {}
        clients = [Client(node.url, transport=t, backoff=(0.05, 0.5)) for t in ("ws", "sse")]
        tasks = []
        try:
            async with httpx.AsyncClient() as http:
                for p in range(PARTITIONS):
                    # A first publication fixes each channel's epoch, so subscribers can start
                    # from a position and miss nothing, whatever happens to their connection.
                    response = await http.post(
                        f"{node.url}/api/publish", json={"channel": f"p:{p}", "data": "start"}
                    )
                    start = Position(response.json()["epoch"], response.json()["offset"])
                    for client in clients:
                        into = received.setdefault((client.transport, p), [])
                        sub = client.subscribe(f"p:{p}", since=start)
                        tasks.append(asyncio.create_task(collect(sub, into)))
            producer = Producer(pg.url, per_partition)
            faults = [
                ("kill", producer.reached(total // 4)),
                ("restart postgres", producer.reached(total // 2)),
                ("kill", producer.reached(3 * total // 4)),
            ]
            producing = asyncio.create_task(producer.run())
            for fault, reached in faults:
                await reached.wait()
                if fault == "kill":
                    node.kill()
                    node.stop()
                    node = await asyncio.to_thread(start_node, broker, config, node.port)
                else:
                    await asyncio.to_thread(pg.restart)
            await producing
            assert producer.rolled_back > 0
            deadline = time.monotonic() + 60 + total / 100
            while any(len(got) < per_partition for got in received.values()):
                assert time.monotonic() < deadline, {key: len(got) for key, got in received.items()}
                for task in tasks:
                    if task.done():
                        task.result()
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # anything extra (a duplicate) would arrive by now
            for (transport, p), got in received.items():
                expected = [{"p": p, "i": i} for i in producer.committed[p]]
                assert got == expected, f"{transport} p:{p}: {len(got)} messages, {len(expected)} expected"
            check = await asyncpg.connect(pg.url)
            assert await check.fetchval(f"SELECT count(*) FROM {TABLE}") == 0
            assert await check.fetchval(f"SELECT count(*) FROM {TABLE}_dead") == 0
            await check.close()
        finally:
            for task in tasks:
                task.cancel()
            for client in clients:
                await client.close()
            node.stop()


@pytest.mark.slow
async def test_every_committed_message_once_in_order_through_kills_and_a_postgres_restart(tmp_path: Path):
    await prove(tmp_path, per_partition=75)  # 300 messages


@pytest.mark.long
@pytest.mark.timeout(1200)
async def test_ten_thousand_messages_through_kills_and_a_postgres_restart(tmp_path: Path):
    await prove(tmp_path, per_partition=2500)  # 10,000 messages
