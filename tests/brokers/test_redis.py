"""The Redis broker: the conformance suite on a real redis-server, then Redis-only behaviour."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from tests.brokers.conformance import (
    OPTIONS,
    T0,
    BrokerConformance,
    BrokerFactory,
    Recorder,
    publish,
    wait_until,
)
from tests.redis_server import RedisServer
from tidings.brokers.redis import RedisBroker, channel_keys
from tidings.brokers.redis_presence import RedisPresence
from tidings.core.events import Gap, Publication
from tidings.core.permissions import NamespaceOptions
from tidings.core.position import Position
from tidings.core.presence import ClientInfo
from tidings.exceptions import Unavailable
from tidings.node import Node, make_broker, make_presence
from tidings.settings import Settings


def now_ms() -> int:
    return time.time_ns() // 1_000_000


pytestmark = pytest.mark.redis


class TestRedisBroker(BrokerConformance):
    @pytest.fixture
    def broker_factory(self, flushed_redis: RedisServer) -> BrokerFactory:
        return lambda: RedisBroker(flushed_redis.url)


async def started(url: str, **kwargs: Any) -> tuple[RedisBroker, Recorder]:
    broker = RedisBroker(url, **kwargs)
    recorder = Recorder()
    await broker.start(recorder)
    return broker, recorder


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, to kill and restart."""
    with RedisServer() as server:
        yield server


async def test_a_channel_has_one_redis_subscription_per_node(flushed_redis: RedisServer) -> None:
    broker, _ = await started(flushed_redis.url)
    other, _ = await started(flushed_redis.url)
    try:
        for _ in range(3):
            await broker.subscribe("one")
        await other.subscribe("one")
        async with aioredis.Redis(port=flushed_redis.port) as client:
            counts = await client.pubsub_numsub(channel_keys("one").pubsub)
            assert counts[0][1] == 2
            assert len(await client.pubsub_channels()) == 1
    finally:
        await broker.close()
        await other.close()


async def test_unsubscribe_stops_delivery_to_this_node(flushed_redis: RedisServer) -> None:
    broker, recorder = await started(flushed_redis.url)
    try:
        await broker.subscribe("gone")
        await publish(broker, "gone", 1)
        await wait_until(lambda: recorder.offsets("gone") == [1], what="first delivery")
        await broker.unsubscribe("gone")
        await broker.subscribe("marker")
        await publish(broker, "gone", 2)
        await publish(broker, "marker", "m")
        await wait_until(lambda: recorder.offsets("marker") == [1], what="marker delivery")
        assert recorder.offsets("gone") == [1]
    finally:
        await broker.close()


async def test_all_of_a_channels_keys_share_one_hash_slot() -> None:
    keys = channel_keys("chat:lobby")
    names = [
        keys.meta,
        keys.history,
        keys.pubsub,
        keys.presence,
        keys.presence_expiry,
        keys.idempotency("abc"),
    ]
    assert len({key_slot(name.encode()) for name in names}) == 1
    assert all(name.startswith("{tidings:chat:lobby}:") for name in names)


async def test_history_and_meta_keys_get_their_ttls(flushed_redis: RedisServer) -> None:
    broker, _ = await started(flushed_redis.url, meta_ttl=60)
    options = NamespaceOptions(history_size=10, history_ttl=1)
    try:
        await publish(broker, "ttl", 1, options=options, key="k")
        async with aioredis.Redis(port=flushed_redis.port) as client:
            keys = channel_keys("ttl")
            assert 0 < await client.pttl(keys.history) <= 1000
            assert 1000 < await client.pttl(keys.meta) <= 60_000
            assert 0 < await client.pttl(keys.idempotency("k")) <= 300_000
    finally:
        await broker.close()


async def test_the_stream_expires_in_real_time_and_the_epoch_survives_it(flushed_redis: RedisServer) -> None:
    broker, _ = await started(flushed_redis.url)
    options = NamespaceOptions(history_size=10, history_ttl=0.2)
    try:
        first = await publish(broker, "expiring", 1, options=options, at=now_ms())
        async with aioredis.Redis(port=flushed_redis.port) as client:
            history = channel_keys("expiring").history

            async def stream_exists() -> bool:
                return bool(await client.exists(history))

            deadline = time.monotonic() + 3
            while await stream_exists():
                assert time.monotonic() < deadline, "stream did not expire"
                await asyncio.sleep(0.02)
        answer = await broker.since("expiring", Position(first.epoch, 0), 10, options, now_ms())
        assert isinstance(answer, Gap)
        assert answer.available_from is None
        second = await publish(broker, "expiring", 2, options=options, at=now_ms())
        assert second.position == Position(first.epoch, 2)
    finally:
        await broker.close()


async def test_the_publish_trims_an_expired_prefix_of_the_stream(flushed_redis: RedisServer) -> None:
    broker, _ = await started(flushed_redis.url)
    options = NamespaceOptions(history_size=100, history_ttl=1)
    try:
        for i in range(5):
            await publish(broker, "trim", i, options=options, at=T0 + i)
        await publish(broker, "trim", "new", options=options, at=T0 + 5000)
        async with aioredis.Redis(port=flushed_redis.port) as client:
            assert await client.xlen(channel_keys("trim").history) == 1
    finally:
        await broker.close()


async def test_a_flushed_redis_gives_channels_a_new_epoch(flushed_redis: RedisServer) -> None:
    broker, _ = await started(flushed_redis.url)
    try:
        old = await publish(broker, "flush", 1)
        async with aioredis.Redis(port=flushed_redis.port) as client:
            await client.flushall()
        new = await publish(broker, "flush", 2)
        assert new.epoch != old.epoch
        assert new.offset == 1
        answer = await broker.since("flush", old.position, 10, OPTIONS, T0)
        assert isinstance(answer, Gap)
        assert answer.epoch == new.epoch
    finally:
        await broker.close()


async def test_publish_is_unavailable_while_redis_is_down_and_works_after_a_restart(
    own_redis: RedisServer,
) -> None:
    broker, recorder = await started(own_redis.url, reconnect_max=0.2)
    try:
        await broker.subscribe("outage")
        before = await publish(broker, "outage", "before")
        await wait_until(lambda: recorder.offsets("outage") == [1], what="live delivery")

        own_redis.kill()
        with pytest.raises(Unavailable):
            await publish(broker, "outage", "during")
        with pytest.raises(Unavailable):
            await broker.ping()
        await wait_until(lambda: recorder.states == [False], what="broker down")

        own_redis.restart()  # empty: the history is gone
        await wait_until(lambda: recorder.states == [False, True], within=10, what="broker back")
        await wait_until(lambda: bool(recorder.controls), what="gap notice")
        channel, gap = recorder.controls[0]
        assert channel == "outage"
        assert gap["op"] == "gap"
        assert gap["requested"] == 2
        assert gap["epoch"] != before.epoch

        after = await publish_eventually(broker, "outage", "after")
        assert after.epoch == gap["epoch"] != before.epoch
        assert after.offset == 1
        await wait_until(lambda: len(recorder.offsets("outage")) == 2, what="delivery after")
        assert recorder.publications[-1] == after
    finally:
        await broker.close()


async def test_publications_missed_while_the_pubsub_link_was_down_are_delivered_in_order(
    flushed_redis: RedisServer,
) -> None:
    listener, seen = await started(flushed_redis.url, reconnect_min=0.3, reconnect_max=0.3)
    publisher, _ = await started(flushed_redis.url)
    try:
        await listener.subscribe("missed")
        await publish(publisher, "missed", 0)
        await wait_until(lambda: seen.offsets("missed") == [1], what="first delivery")
        async with aioredis.Redis(port=flushed_redis.port) as client:
            await client.client_kill_filter(_type="pubsub")
        await wait_until(lambda: seen.states == [False], what="link down")
        for i in range(1, 6):
            await publish(publisher, "missed", i)
        await wait_until(lambda: seen.states == [False, True], what="link back")
        await publish(publisher, "missed", 6)
        await wait_until(lambda: len(seen.offsets("missed")) >= 7, what="catch-up and live")
        assert seen.offsets("missed") == [1, 2, 3, 4, 5, 6, 7]
        assert [p.data for p in seen.publications] == list(range(7))
        assert seen.controls == []
    finally:
        await listener.close()
        await publisher.close()


async def test_a_redis_restarted_with_its_data_keeps_the_epoch_and_offsets(own_redis: RedisServer) -> None:
    broker, seen = await started(own_redis.url, reconnect_min=0.05, reconnect_max=0.2)
    try:
        await broker.subscribe("kept")
        for i in range(3):
            await publish(broker, "kept", i)
        await wait_until(lambda: len(seen.offsets("kept")) == 3, what="deliveries")
        epoch = (await broker.position("kept")).epoch
        own_redis.cli("save")
        own_redis.restart(keep_data=True)
        await wait_until(lambda: seen.states == [False, True], within=10, what="reconnect")
        after = await publish_eventually(broker, "kept", 3)
        assert after.position == Position(epoch, 4)
        await wait_until(lambda: len(seen.offsets("kept")) == 4, what="delivery after")
        assert seen.offsets("kept") == [1, 2, 3, 4]
        assert seen.controls == []
    finally:
        await broker.close()


async def test_subscribe_is_unavailable_while_redis_is_down(own_redis: RedisServer) -> None:
    broker, _ = await started(own_redis.url)
    try:
        own_redis.kill()
        with pytest.raises(Unavailable):
            await broker.subscribe("nowhere")
        with pytest.raises(Unavailable):
            await broker.position("nowhere")
    finally:
        await broker.close()


async def publish_eventually(broker: RedisBroker, channel: str, data: Any) -> Publication:
    """Publish, retrying Unavailable for a bounded time (a pooled connection may be stale)."""
    deadline = time.monotonic() + 5
    while True:
        try:
            return await publish(broker, channel, data)
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_a_flush_under_a_live_subscription_is_announced_as_a_gap(flushed_redis: RedisServer) -> None:
    broker, seen = await started(flushed_redis.url)
    try:
        await broker.subscribe("reset")
        old = await publish(broker, "reset", 1)
        await publish(broker, "reset", 2)
        await wait_until(lambda: len(seen.offsets("reset")) == 2, what="deliveries")
        async with aioredis.Redis(port=flushed_redis.port) as client:
            await client.flushall()
        new = await publish(broker, "reset", 3)
        await wait_until(lambda: len(seen.offsets("reset")) == 3, what="delivery after flush")
        assert seen.controls == [
            (
                "reset",
                {"op": "gap", "channel": "reset", "epoch": new.epoch, "requested": 3, "available_from": 1},
            )
        ]
        assert new.epoch != old.epoch
        assert seen.publications[-1] == new
    finally:
        await broker.close()


async def test_a_live_message_that_skips_offsets_is_preceded_by_the_missing_ones(
    flushed_redis: RedisServer,
) -> None:
    broker, seen = await started(flushed_redis.url)
    try:
        await broker.subscribe("holes")
        await publish(broker, "holes", 1)
        await wait_until(lambda: seen.offsets("holes") == [1], what="first delivery")
        # Offsets 2 and 3 reach history without reaching Pub/Sub (as if lost on the way).
        keys = channel_keys("holes")
        async with aioredis.Redis(port=flushed_redis.port) as client:
            epoch = (await client.hget(keys.meta, "e")).decode()
            for offset in (2, 3):
                await client.hset(keys.meta, "o", offset)
                payload = orjson.dumps(
                    {
                        "offset": offset,
                        "epoch": epoch,
                        "channel": "holes",
                        "id": f"x{offset}",
                        "time": T0,
                        "event": "message",
                        "data": offset,
                    }
                )
                await client.xadd(keys.history, {"p": payload, "t": T0}, id=f"{offset}-0")
        await publish(broker, "holes", 4)
        await wait_until(lambda: len(seen.offsets("holes")) == 4, what="filled deliveries")
        assert seen.offsets("holes") == [1, 2, 3, 4]
        assert seen.controls == []
    finally:
        await broker.close()


async def test_the_node_builds_a_redis_broker_and_redis_presence_from_settings(
    flushed_redis: RedisServer,
) -> None:
    settings = Settings(broker=flushed_redis.url)
    broker = make_broker(settings)
    assert isinstance(broker, RedisBroker)
    assert isinstance(make_presence(settings, broker), RedisPresence)
    async with Node(settings, broker=broker) as node:
        result = await node.publish("chat:lobby", {"text": "hi"})
        assert result.publication.offset == 1
        assert (await node.broker.position("chat:lobby")).offset == 1


async def test_presence_is_shared_by_every_node_on_the_same_redis(flushed_redis: RedisServer) -> None:
    first, _ = await started(flushed_redis.url)
    second, _ = await started(flushed_redis.url)
    try:
        now = time.time()
        client = ClientInfo("c1", "alice", {"n": 1})
        await first.presence_manager().add("hall", client, 10, now)
        assert await second.presence_manager().list("hall", now) == [client]
        await second.presence_manager().remove("hall", "c1")
        assert await first.presence_manager().list("hall", now) == []
    finally:
        await first.close()
        await second.close()


async def test_a_burst_larger_than_the_pool_waits_for_connections_instead_of_failing(
    flushed_redis: RedisServer,
) -> None:
    broker, _ = await started(flushed_redis.url, max_connections=4)
    try:
        results = await asyncio.gather(*[publish(broker, "burst", i) for i in range(200)])
        assert sorted(p.offset for p in results) == list(range(1, 201))
    finally:
        await broker.close()


async def test_the_asyncio_client_makes_one_attempt_per_command_and_no_library_retry() -> None:
    """A retried ``EVALSHA`` whose reply was lost would append twice, so the single-Redis client
    must not retry: a server that drops every connection sees exactly one attempt per command.
    (It must also be redis-py's *asyncio* Retry: the synchronous one warns and is not awaited.)"""
    import socket
    import warnings

    from redis.asyncio.retry import Retry as AsyncRetry

    from tidings.brokers.redis import redis_client

    accepted = 0

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await reader.read(1)  # the command has started to arrive: hang up without a reply
        writer.close()

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = await asyncio.start_server(drop, "127.0.0.1", port)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        client = redis_client(f"redis://127.0.0.1:{port}/0", command_timeout=2.0)
    try:
        assert isinstance(client, aioredis.Redis)
        retry = client.get_retry()
        assert isinstance(retry, AsyncRetry)
        assert retry.get_retries() == 0
        with pytest.raises(Exception):  # noqa: B017 - redis-py's ConnectionError, whichever subclass
            await client.set("k", "v")
        assert accepted == 1
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()


class _Subscriber:
    """A hub subscriber that records what it is told."""

    def __init__(self) -> None:
        self.controls: list[dict[str, Any]] = []

    def deliver(self, publication: Any) -> None:
        pass

    def control(self, channel: str, message: dict[str, Any]) -> None:
        self.controls.append(message)


async def test_a_read_of_the_restarted_store_before_the_link_is_back_is_told_of_the_new_epoch_once(
    own_redis: RedisServer,
) -> None:
    # The Pub/Sub link reconnects up to 2 s after Redis is back; a subscriber's history read
    # (another connection) reaches the new store at once and is told of the new epoch by its
    # own Gap. The link's catch-up notice, once it is back, is for the subscriber that was live
    # before the outage only: a second one told the late subscriber that offsets from 2 on of
    # the new epoch were lost (a long poll received it in its next answer).
    broker = RedisBroker(own_redis.url, reconnect_min=2.0, reconnect_max=2.0)
    node = Node(Settings(), broker=broker)
    await node.start()
    try:
        held, late = _Subscriber(), _Subscriber()
        first = (await node.publish("restart", 1)).publication
        await node.subscribe(held, "restart", None, lambda _: None)
        own_redis.kill()
        await wait_until(lambda: not node.broker_available, what="the link down")
        own_redis.restart()  # empty: a new epoch
        deadline = time.monotonic() + 5
        while True:
            try:
                result = await node.subscribe(late, "restart", first.position, lambda _: None)
                break
            except Unavailable:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        if node.broker_available:
            pytest.skip("the link was back before the late subscriber's read (a 2 s window missed)")
        assert result.gap is not None and result.gap.epoch != first.epoch
        await wait_until(lambda: node.broker_available and bool(held.controls), within=10, what="catch-up")
        assert [m["epoch"] for m in held.controls] == [result.gap.epoch]
        await asyncio.sleep(0.2)
        assert late.controls == []
    finally:
        await node.stop()
