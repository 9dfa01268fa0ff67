"""The PostgreSQL outbox consumer against the real PostgreSQL, through a running tidings."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.consumers.pg import PG_URL
from tests.redis_server import RedisServer, free_port
from tests.serving import serve
from tests.wsclient import WS
from tidings import outbox

DEADLINE = 20.0


def consumer(table: str, **extra: Any) -> dict[str, Any]:
    return {"orders": {"kind": "postgres", "url": PG_URL, "table": table, **extra}}


async def subscribe(ws: WS, *channels: str) -> None:
    for channel in channels:
        reply = await ws.request("subscribe", channel=channel)
        assert reply["op"] == "subscribed", reply


async def insert(table: str, *rows: dict[str, Any]) -> list[int]:
    conn = await asyncpg.connect(PG_URL)
    try:
        async with conn.transaction():
            ids = []
            for row in rows:
                if "raw_json" in row:  # what the helpers cannot write: jsonb JSON decoders refuse
                    sql = f"INSERT INTO {table} (channel, data) VALUES ($1, $2::jsonb) RETURNING id"
                    ids.append(await conn.fetchval(sql, row["channel"], row["raw_json"]))
                else:
                    channel, data = row.pop("channel", None), row.pop("data")
                    ids.append(await outbox.write_asyncpg(conn, channel, data, table=table, **row))
            return ids
    finally:
        await conn.close()


async def fetch(sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(PG_URL)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
        return rows
    finally:
        await conn.close()


async def eventually(check: Any, what: str, timeout: float = DEADLINE) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def get(url: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(url, timeout=10)


async def metric(url: str, name: str, **labels: str) -> float | None:
    text = (await get(f"{url}/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


async def test_committed_rows_are_published_in_order_and_deleted(outbox_table: str):
    # poll_interval is long: only the trigger's NOTIFY can make this quick
    with serve(consumers=consumer(outbox_table, poll_interval=60)) as server:
        async with await WS.open(server.ws_url) as ws:
            await subscribe(ws, "orders:1", "orders:2")
            await eventually(lambda: _connected(server.url), "the consumer to connect")
            await insert(
                outbox_table,
                {"channel": "orders:1", "data": {"n": 1}, "partition": "1"},
                {"channel": "orders:2", "data": {"n": 2}, "partition": "2", "event": "paid"},
                {"channel": "orders:1", "data": {"n": 3}, "partition": "1", "idempotency_key": "mine"},
            )
            got = await ws.messages(3)
            by_channel = {
                c: [m["data"]["n"] for m in got if m["channel"] == c] for c in ("orders:1", "orders:2")
            }
            assert by_channel == {"orders:1": [1, 3], "orders:2": [2]}
            assert {m["event"] for m in got if m["channel"] == "orders:2"} == {"paid"}
            await eventually(lambda: _empty(outbox_table), "the rows to be deleted")
            assert await metric(server.url, "tidings_consumer_published_total", consumer="orders") == 3
            assert await metric(server.url, "tidings_consumer_connected", consumer="orders") == 1
            snapshot = (await get(f"{server.url}/api/admin/snapshot")).json()
            assert snapshot["consumers"][0] | {"lag": 0} == {
                "name": "orders",
                "kind": "postgres",
                "source": f"postgres 127.0.0.1:5432/test {outbox_table}",
                "connected": True,
                "error": None,
                "lag": 0,
                "published": 3,
                "failed": 0,
                "dead_lettered": 0,
                "reconnects": 0,
            }


async def _connected(url: str) -> bool:
    return await metric(url, "tidings_consumer_connected", consumer="orders") == 1


async def _empty(table: str) -> bool:
    return not await fetch(f"SELECT id FROM {table}")


async def test_a_rolled_back_transaction_publishes_nothing(outbox_table: str):
    with serve(consumers=consumer(outbox_table)) as server:
        async with await WS.open(server.ws_url) as ws:
            await subscribe(ws, "c")
            conn = await asyncpg.connect(PG_URL)
            try:
                tx = conn.transaction()
                await tx.start()
                await outbox.write_asyncpg(conn, "c", "rolled back", table=outbox_table)
                await tx.rollback()
            finally:
                await conn.close()
            await insert(outbox_table, {"channel": "c", "data": "committed"})
            assert [m["data"] for m in await ws.messages(1)] == ["committed"]
            with pytest.raises(TimeoutError):
                await ws.messages(1, timeout=1.0)


async def test_what_cannot_be_published_is_dead_lettered_and_blocks_nothing(outbox_table: str):
    settings = consumer(outbox_table, channels=["ok:*", "big:*"], max_message_bytes=1000)
    with serve(consumers=settings, namespaces={"big": {"max_message_bytes": 64}}) as server:
        async with await WS.open(server.ws_url) as ws:
            await subscribe(ws, "ok:1")
            ids = await insert(
                outbox_table,
                {"channel": "bad channel!", "data": 1},
                {"channel": "secret:1", "data": 2},
                {"channel": "big:1", "data": "x" * 100},
                {"channel": None, "channels": ["ok:1", "no way"], "data": 4},
                {"channel": "ok:1", "data": 5, "event": "has space"},
                {"channel": "ok:1", "data": "y" * 2000},
                {"channel": "ok:1", "raw_json": "1e400"},  # valid jsonb, beyond a double
                {"channel": "ok:1", "data": "after them"},
            )
            assert [m["data"] for m in await ws.messages(1)] == ["after them"]
            dead = await eventually(
                lambda: fetch(f"SELECT id, error_code, error, data FROM {outbox_table}_dead ORDER BY id"),
                "the dead letters",
            )
            assert [(r["id"], r["error_code"]) for r in dead] == [
                (ids[0], "bad_request"),
                (ids[1], "forbidden"),
                (ids[2], "too_large"),
                (ids[3], "bad_request"),
                (ids[4], "bad_request"),
                (ids[5], "too_large"),
                (ids[6], "bad_request"),
            ]
            assert "secret:1" in dead[1]["error"]
            assert orjson.loads(dead[2]["data"]) == "x" * 100
            assert await _empty(outbox_table)
            assert await metric(server.url, "tidings_consumer_dead_lettered_total", consumer="orders") == 7


async def test_a_message_published_before_a_crash_is_not_published_again(outbox_table: str):
    """The crash between publish and delete, replayed: the row's publication is already in the hub
    under the row's key (the consumer's name and the row id) when the consumer takes the row, so
    the consumer's publish is the duplicate and subscribers get the message once."""
    with serve(consumers=consumer(outbox_table)) as server:
        async with await WS.open(server.ws_url) as ws:
            await subscribe(ws, "c")
            conn = await asyncpg.connect(PG_URL)
            try:
                async with conn.transaction():
                    row_id = await outbox.write_asyncpg(conn, "c", "once", table=outbox_table)
                    await server_publish(
                        server.url, {"channel": "c", "data": "once", "idempotency_key": f"orders:{row_id}"}
                    )
            finally:
                await conn.close()
            await eventually(lambda: _empty(outbox_table), "the row to be taken")
            await insert(outbox_table, {"channel": "c", "data": "next"})
            assert [m["data"] for m in await ws.messages(2)] == ["once", "next"]


async def server_publish(url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{url}/api/publish", json=body, timeout=10)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result


async def test_an_unreachable_source_is_reported_and_retried():
    port = free_port()  # nothing listens there
    settings = {
        "orders": {
            "kind": "postgres",
            "url": f"postgresql://postgres@127.0.0.1:{port}/test",
            "retry_base": 0.05,
            "retry_max": 0.2,
        }
    }
    with serve(consumers=settings) as server:

        async def refused() -> bool:
            response = await get(f"{server.url}/readyz")
            return response.status_code == 503 and "consumer orders cannot reach" in response.text

        await eventually(refused, "/readyz to report the consumer")
        await eventually(
            lambda: _at_least(server.url, "tidings_consumer_reconnects_total", 2), "the consumer to retry"
        )
        assert await metric(server.url, "tidings_consumer_connected", consumer="orders") == 0
        assert (await get(f"{server.url}/healthz")).status_code == 200


async def _at_least(url: str, name: str, value: float) -> bool:
    return (await metric(url, name, consumer="orders") or 0) >= value


async def test_two_nodes_on_one_table_publish_each_row_once_in_order_per_partition(outbox_table: str):
    partitions, per_partition = 4, 40
    with RedisServer() as redis:
        broker = f"redis://127.0.0.1:{redis.port}/0"
        settings = consumer(outbox_table, batch_size=7)
        namespaces = {"p": {"history_size": 1000}}
        with (
            serve(broker=broker, consumers=settings, namespaces=namespaces) as one,
            serve(broker=broker, consumers=settings, namespaces=namespaces) as two,
        ):
            async with await WS.open(one.ws_url) as ws:
                await subscribe(ws, *(f"p:{p}" for p in range(partitions)))
                # Big transactions: both nodes wake at the same commit and find plenty to take.
                for half in (range(per_partition // 2), range(per_partition // 2, per_partition)):
                    await insert(
                        outbox_table,
                        *(
                            {"channel": f"p:{p}", "data": i, "partition": str(p)}
                            for i in half
                            for p in range(partitions)
                        ),
                    )
                got = await ws.messages(partitions * per_partition, timeout=DEADLINE)
                with pytest.raises(TimeoutError):
                    await ws.messages(1, timeout=1.0)
            for p in range(partitions):
                assert [m["data"] for m in got if m["channel"] == f"p:{p}"] == list(range(per_partition))
            published = [
                await metric(node.url, "tidings_consumer_published_total", consumer="orders")
                for node in (one, two)
            ]
            assert sum(p or 0 for p in published) >= partitions * per_partition


async def test_rows_wait_while_the_broker_is_down_and_go_out_when_it_is_back(outbox_table: str):
    with RedisServer() as redis:
        settings = consumer(outbox_table, retry_base=0.05, retry_max=0.3)
        with serve(broker=redis.url, consumers=settings) as server:
            async with await WS.open(server.ws_url) as ws:
                await subscribe(ws, "c")
                await insert(outbox_table, {"channel": "c", "data": 1})
                assert [m["data"] for m in await ws.messages(1)] == [1]
                redis.kill()
                await insert(outbox_table, {"channel": "c", "data": 2}, {"channel": "c", "data": 3})
                await eventually(
                    lambda: _at_least(server.url, "tidings_consumer_failed_total", 2), "publishes to fail"
                )
                assert len(await fetch(f"SELECT id FROM {outbox_table}")) == 2  # kept, in the table
                redis.restart(keep_data=True)
                await eventually(lambda: _empty(outbox_table), "the rows to go out")
            # Redis came back empty (nothing was saved): the history holds what was published since
            async with await WS.open(server.ws_url) as ws:
                reply = await ws.request("history", channel="c", limit=10)
                assert [p["data"] for p in reply["publications"]] == [2, 3]


async def test_without_the_trigger_polling_still_finds_the_rows(outbox_table: str):
    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f"DROP TRIGGER {outbox_table}_notify ON {outbox_table}")
    finally:
        await conn.close()
    with serve(consumers=consumer(outbox_table, poll_interval=0.2)) as server:
        async with await WS.open(server.ws_url) as ws:
            await subscribe(ws, "c")
            await insert(outbox_table, {"channel": "c", "data": "found by polling"})
            assert [m["data"] for m in await ws.messages(1)] == ["found by polling"]


async def test_a_missing_table_is_reported_and_retried_with_a_growing_backoff():
    settings = consumer("no_such_outbox", retry_base=0.05, retry_max=0.4)
    with serve(consumers=settings) as server:

        async def reported() -> bool:
            response = await get(f"{server.url}/readyz")
            return response.status_code == 503 and "no_such_outbox does not exist" in response.text

        await eventually(reported, "/readyz to name the missing table")
        await asyncio.sleep(2.0)
        # 0.05 + 0.1 + 0.2 + 0.4 + 0.4 …: about 7 attempts in 2 s (40 without the backoff growing)
        reconnects = await metric(server.url, "tidings_consumer_reconnects_total", consumer="orders")
        assert reconnects is not None and 3 <= reconnects <= 14
