"""The WebhookStore contract, run against every implementation (SQLite and Redis), and the
Redis queue's leases."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis
from tests.redis_server import RedisCluster, RedisServer, redis_available

from tidings.webhooks.dispatcher import LeasingStore
from tidings.webhooks.redis_store import RedisWebhookStore
from tidings.webhooks.signing import SigningKey
from tidings.webhooks.store import Attempt, Endpoint, Message, SQLiteWebhookStore, WebhookStore

StoreFactory = Callable[[], Awaitable[WebhookStore]]


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    if not redis_available():
        pytest.skip("redis-server is not installed")
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    with redis.Redis(port=redis_server.port) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisCluster]:
    if not redis_available():
        pytest.skip("redis-server is not installed")
    with RedisCluster() as cluster:
        yield cluster


@pytest.fixture
def cluster_url(redis_cluster: RedisCluster) -> str:
    for node in redis_cluster.nodes:
        with redis.Redis(port=node.port) as client:
            client.flushall()
    return redis_cluster.url


@pytest.fixture(params=["sqlite", "redis", "redis-cluster"])
async def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    opened: list[WebhookStore] = []
    url = (
        ""
        if request.param == "sqlite"
        else request.getfixturevalue("redis_url" if request.param == "redis" else "cluster_url")
    )

    async def make() -> WebhookStore:
        store: WebhookStore = RedisWebhookStore(url) if url else SQLiteWebhookStore(tmp_path / "store.db")
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


def endpoint(ident: str = "ep_1") -> Endpoint:
    return Endpoint(
        id=ident,
        url="https://example.com/h",
        channels=["c:*"],
        keys=[SigningKey("whsec_AAAA")],
        created_at=1.0,
        updated_at=1.0,
    )


def message(ident: str = "msg_1", at: float = 10.0) -> Message:
    return Message(ident, "c:1", "message", b'{"a":1}', at)


def attempt(outcome: str, status: int | None = 500) -> Attempt:
    return Attempt(11.0, status, 1.5, None if status == 200 else "HTTP 500", "body", outcome)


async def test_enqueued_deliveries_survive_a_reopen_and_enqueue_is_idempotent(reopen: StoreFactory) -> None:
    store = await reopen()
    await store.put_endpoint(endpoint("ep_1"))
    await store.put_endpoint(endpoint("ep_2"))
    due = await store.enqueue(message(), ["ep_1", "ep_2"])
    assert [d.endpoint_id for d in due] == ["ep_1", "ep_2"]
    assert await store.enqueue(message(), ["ep_1", "ep_2"]) == []
    await store.close()
    again = await reopen()
    pending = await again.pending()
    assert [d.delivery_id for d in pending] == [d.delivery_id for d in due]
    job = await again.job(due[0].delivery_id)
    assert job is not None
    assert job.message.body == b'{"a":1}'
    assert job.endpoint.keys == [SigningKey("whsec_AAAA")]


async def test_attempts_move_the_delivery_and_are_logged(reopen: StoreFactory) -> None:
    store = await reopen()
    await store.put_endpoint(endpoint())
    (due,) = await store.enqueue(message(), ["ep_1"])
    await store.record_attempt(due.delivery_id, attempt("pending"), "pending", 20.0, None)
    changed = Endpoint(
        id="ep_1",
        url="https://example.com/h",
        channels=["c:*"],
        keys=[SigningKey("whsec_AAAA")],
        failing_since=11.0,
    )
    await store.record_attempt(due.delivery_id, attempt("failed"), "failed", None, changed)
    stored = await store.get_endpoint("ep_1")
    assert stored is not None
    assert stored.failing_since == 11.0
    assert await store.job(due.delivery_id) is None
    delivery = await store.delivery(due.delivery_id)
    assert delivery is not None
    assert delivery.status == "failed"
    assert delivery.attempts == 2
    assert [a.outcome for a in delivery.log] == ["pending", "failed"]
    assert [d.id for d in await store.deliveries("ep_1", "failed", 10)] == [due.delivery_id]
    assert await store.deliveries("ep_1", "succeeded", 10) == []


async def test_replay_makes_failed_deliveries_pending_again(reopen: StoreFactory) -> None:
    store = await reopen()
    await store.put_endpoint(endpoint())
    (old,) = await store.enqueue(message("msg_old", at=5.0), ["ep_1"])
    (new,) = await store.enqueue(message("msg_new", at=50.0), ["ep_1"])
    for due in (old, new):
        await store.record_attempt(due.delivery_id, attempt("failed"), "failed", None, None)
    replayed = await store.replay("ep_1", None, 40.0, now=60.0)
    assert [d.delivery_id for d in replayed] == [new.delivery_id]
    job = await store.job(new.delivery_id)
    assert job is not None
    assert job.attempts == 0
    assert job.message.id == "msg_new"


async def test_deleting_an_endpoint_deletes_its_deliveries(reopen: StoreFactory) -> None:
    store = await reopen()
    await store.put_endpoint(endpoint())
    await store.enqueue(message(), ["ep_1"])
    assert await store.delete_endpoint("ep_1") is True
    assert await store.pending() == []
    assert await store.list_endpoints() == []
    assert await store.delete_endpoint("ep_1") is False


async def test_inbound_ids_are_remembered_for_the_ttl(reopen: StoreFactory) -> None:
    store = await reopen()
    assert await store.remember_inbound("gh", "d1", now=100.0, ttl=50.0) is True
    assert await store.remember_inbound("gh", "d1", now=120.0, ttl=50.0) is False
    assert await store.remember_inbound("other", "d1", now=120.0, ttl=50.0) is True
    assert await store.remember_inbound("gh", "d1", now=200.0, ttl=50.0) is True
    await store.forget_inbound("gh", "d1")
    assert await store.remember_inbound("gh", "d1", now=201.0, ttl=50.0) is True


async def test_redis_leases_hand_a_dead_holders_deliveries_to_another_store(redis_url: str) -> None:
    one = RedisWebhookStore(redis_url, lease=0.3)
    two = RedisWebhookStore(redis_url, lease=0.3)
    await one.open()
    await two.open()
    try:
        assert isinstance(one, LeasingStore)
        assert not isinstance(SQLiteWebhookStore("unused.db"), LeasingStore)
        await one.put_endpoint(endpoint())
        due = await one.enqueue(message(at=1.0), ["ep_1"])
        held = [d.delivery_id for d in due]
        assert await two.claim() == []  # held by one, lease running
        assert await one.renew(held) == []
        # one stops renewing (it died): after the lease the delivery is due again for two
        deadline = asyncio.get_running_loop().time() + 5
        while not (claimed := await two.claim()):
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        assert [d.delivery_id for d in claimed] == held
        assert claimed[0].attempts == 0
        assert await one.renew(held) == held  # one learns it lost them
        # one's attempt, in flight while its lease ended, is recorded but takes nothing back
        await one.record_attempt(held[0], attempt("pending"), "pending", 1.5, None)
        assert await one.renew(held) == held
        assert await one.claim() == []  # two holds them now
        # two retries later: it keeps holding; then succeeds: nothing is due anywhere
        await two.record_attempt(held[0], attempt("pending"), "pending", 2.0, None)
        assert await one.claim() == []
        await two.record_attempt(held[0], attempt("succeeded", 200), "succeeded", None, None)
        assert await one.pending() == []
        # a released delivery is due again at once for any store
        (again,) = await two.enqueue(message("msg_2", at=3.0), ["ep_1"])
        await two.release([again.delivery_id])
        assert [d.delivery_id for d in await one.claim()] == [again.delivery_id]
    finally:
        await one.close()
        await two.close()


async def test_sqlite_writes_the_deliveries_of_a_message_a_crash_left_without_them(tmp_path: Path) -> None:
    """enqueue commits the message with its endpoints first; a process killed before the
    delivery rows were written leaves that row, and the next open writes them."""
    import json
    import sqlite3

    path = tmp_path / "store.db"
    store = SQLiteWebhookStore(path)
    await store.open()
    for ident in ("ep_1", "ep_2", "ep_gone"):
        await store.put_endpoint(endpoint(ident))
    (first,) = await store.enqueue(message("msg_first"), ["ep_1"])
    await store.close()
    with sqlite3.connect(path) as db:  # what the publisher's commit alone leaves behind
        db.execute("DELETE FROM endpoints WHERE id = 'ep_gone'")
        db.execute(
            "INSERT INTO messages (id, channel, event, body, created_at, targets) VALUES (?, ?, ?, ?, ?, ?)",
            (
                "msg_crash",
                "c:1",
                "message",
                b"{}",
                20.0,
                json.dumps({"seq": first.seq + 1, "endpoints": ["ep_1", "ep_2", "ep_gone"]}),
            ),
        )
    again = SQLiteWebhookStore(path)
    await again.open()
    try:
        pending = await again.pending()
        assert [(d.endpoint_id, d.seq) for d in pending] == [
            ("ep_1", first.seq),
            ("ep_1", first.seq + 1),
            ("ep_2", first.seq + 2),
        ]
        (after,) = await again.enqueue(message("msg_after"), ["ep_2"])
        assert after.seq == first.seq + 3  # not a seq already taken
        assert [d.seq for d in await again.pending()][-1] == after.seq
    finally:
        await again.close()


async def test_sqlite_opens_a_store_written_before_messages_had_targets(tmp_path: Path) -> None:
    import sqlite3

    from tidings.webhooks.store import _SCHEMA

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(_SCHEMA)
        db.execute("INSERT INTO endpoints (id, doc) VALUES ('ep_1', ?)", (_endpoint_json(),))
        db.execute("INSERT INTO messages VALUES ('msg_old', 'c:1', 'message', X'7B7D', 1.0)")
        db.execute(
            "INSERT INTO deliveries (id, endpoint_id, message_id, status, next_attempt_at, created_at, "
            "updated_at) VALUES ('dlv_old_ep_1', 'ep_1', 'msg_old', 'pending', 1.0, 1.0, 1.0)"
        )
    store = SQLiteWebhookStore(path)
    await store.open()
    try:
        assert [d.delivery_id for d in await store.pending()] == ["dlv_old_ep_1"]
        (new,) = await store.enqueue(message("msg_new"), ["ep_1"])
        assert [d.delivery_id for d in await store.pending()] == ["dlv_old_ep_1", new.delivery_id]
    finally:
        await store.close()


def _endpoint_json() -> str:
    from tidings.webhooks.store import _endpoint_doc

    return _endpoint_doc(endpoint())


async def test_sqlite_groups_concurrent_enqueues_and_attempt_records_into_few_commits(
    tmp_path: Path,
) -> None:
    store = SQLiteWebhookStore(tmp_path / "store.db")
    await store.open()
    commits = 0
    transaction = store._transaction

    def counting(db: object, fn: object) -> object:
        nonlocal commits
        commits += 1
        return transaction(db, fn)  # type: ignore[arg-type]

    store._transaction = counting  # type: ignore[method-assign]
    try:
        await store.put_endpoint(endpoint())
        commits = 0
        dues = await asyncio.gather(*(store.enqueue(message(f"msg_{n}"), ["ep_1"]) for n in range(200)))
        await asyncio.gather(
            *(
                store.record_attempt(d.delivery_id, attempt("succeeded", 200), "succeeded", None, None)
                for (d,) in dues
            )
        )
        assert commits <= 6  # 200 publishers, their 200 delivery rows, 200 attempts
        assert await store.pending() == []
        assert len(await store.deliveries("ep_1", "succeeded", 500)) == 200
    finally:
        await store.close()


async def test_a_burst_of_concurrent_enqueues_and_attempt_records_all_land(reopen: StoreFactory) -> None:
    """Concurrent calls are grouped (one SQLite commit, one Redis pipeline): each still gets its
    own answer, and a failing one fails alone."""
    store = await reopen()
    await store.put_endpoint(endpoint("ep_1"))
    await store.put_endpoint(endpoint("ep_2"))
    dues = await asyncio.gather(*(store.enqueue(message(f"msg_{n}"), ["ep_1", "ep_2"]) for n in range(100)))
    assert all(len(d) == 2 for d in dues)
    seqs = [d.seq for pair in dues for d in pair]
    assert len(set(seqs)) == 200
    await asyncio.gather(
        *(
            store.record_attempt(d.delivery_id, attempt("succeeded", 200), "succeeded", None, None)
            for pair in dues
            for d in pair
        )
    )
    assert await store.pending() == []
    assert len(await store.deliveries("ep_2", "succeeded", 500)) == 100


@pytest.mark.parametrize("synchronous", ["normal", "full"])
async def test_sqlite_checkpoints_in_the_worker_and_full_commits_there(
    tmp_path: Path, synchronous: str
) -> None:
    """normal: commits on the event loop, a PASSIVE checkpoint in the worker every
    CHECKPOINT_ROWS rows; full: every write in the worker (an fsync per commit)."""
    from tidings.webhooks.store import CHECKPOINT_ROWS

    store = SQLiteWebhookStore(tmp_path / "store.db", synchronous=synchronous)
    await store.open()
    assert store.inline is (synchronous == "normal")
    await store.put_endpoint(endpoint("ep_1"))
    await store.put_endpoint(endpoint("ep_2"))
    count = CHECKPOINT_ROWS // 2 + 10 if store.inline else 50
    for start in range(0, count, 500):
        await asyncio.gather(
            *(
                store.enqueue(message(f"msg_{n}"), ["ep_1", "ep_2"])
                for n in range(start, min(count, start + 500))
            )
        )
    assert len(await store.pending()) == 2 * count
    if store.inline:
        assert store._checkpointing is not None
        await store._checkpointing
    await store.close()
    again = SQLiteWebhookStore(tmp_path / "store.db", synchronous=synchronous)
    await again.open()
    try:
        assert len(await again.pending()) == 2 * count
    finally:
        await again.close()
