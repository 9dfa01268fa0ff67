"""The Redis Streams, NATS JetStream and AMQP consumers against the real servers, below the runner:
order, acknowledgement, redelivery with the same idempotency keys, release, dead letters, lag,
claims of a dead member's entries, a source that goes away."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.consumers.queues import (
    KINDS,
    NATS_SERVER,
    AmqpKit,
    DurableRedis,
    Kit,
    NatsKit,
    OwnNats,
    RedisKit,
    available,
    kit,
    message,
)
from tidings.consumers.base import Consumer, Message, SourceUnavailable
from tidings.consumers.redis_stream import RedisStreamConsumer
from tidings.consumers.service import make_consumer
from tidings.core.consumer_message import DeadLetter, PublishRequest
from tidings.settings import ConsumerSettings


def consumer_for(k: Kit, **settings: Any) -> Consumer:
    return make_consumer("q", ConsumerSettings(**{**k.settings(), "claim_idle": 1.0, **settings}))


def redis_member(k: RedisKit, member: str, **settings: Any) -> RedisStreamConsumer:
    return RedisStreamConsumer("q", ConsumerSettings(**{**k.settings(), **settings}), member=member)


async def fetch_all(consumer: Consumer, count: int, timeout: float = 30) -> list[Message]:
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        assert time.monotonic() < deadline, f"fetched {len(got)} of {count}"
        got += await consumer.fetch(count - len(got), 0.2)
    return got


def keys(messages: Sequence[Message]) -> list[str]:
    return [m.request.idempotency_key for m in messages if isinstance(m.request, PublishRequest)]


def datas(messages: Sequence[Message]) -> list[Any]:
    return [m.request.data for m in messages if isinstance(m.request, PublishRequest)]


@pytest.fixture(params=KINDS)
async def queue(request: pytest.FixtureRequest) -> Any:
    if not available(request.param):
        pytest.skip(f"no {request.param} server on this machine")
    k = kit(request.param)
    if isinstance(k, NatsKit):
        await k.create()
    try:
        yield k
    finally:
        await k.cleanup()


async def test_messages_come_in_order_and_again_with_the_same_keys_until_acknowledged(queue: Kit):
    await queue.put([message("c", i) for i in range(10)], ids=[f"m{i}" for i in range(10)])
    first = consumer_for(queue)
    await first.connect()
    try:
        taken = await fetch_all(first, 10)
        assert datas(taken) == list(range(10))
        assert len(set(keys(taken))) == 10 and all(key.startswith("q:") for key in keys(taken))
        await first.ack(taken[:4])
        assert await first.lag() == 6  # fetched, not acknowledged
    finally:
        await first.close()  # gone without acknowledging the other six
    second = consumer_for(queue)
    await second.connect()
    try:
        again = await fetch_all(second, 6)
        assert datas(again) == list(range(4, 10))
        assert keys(again) == keys(taken[4:])  # the same keys: the hub drops a second publish
        await second.ack(again)
        await asyncio.sleep(0.3)
        assert await second.fetch(10, 0.2) == []
        assert await second.lag() == 0
    finally:
        await second.close()


async def test_released_messages_come_again_first_and_in_order(queue: Kit):
    await queue.put([message("c", i) for i in range(6)], ids=[f"m{i}" for i in range(6)])
    consumer = consumer_for(queue, batch_size=6)
    await consumer.connect()
    try:
        taken = await fetch_all(consumer, 6)
        await consumer.ack(taken[:2])
        await consumer.release(taken[2:])
        again = await fetch_all(consumer, 4)
        assert datas(again) == [2, 3, 4, 5]
        assert keys(again) == keys(taken[2:])
        await consumer.ack(again)
        assert await consumer.lag() == 0
    finally:
        await consumer.close()


async def test_a_dead_letter_keeps_the_message_and_its_error_and_frees_the_ones_behind(queue: Kit):
    await queue.put([message("c", 0), b"not json", message("c", 2)])
    consumer = consumer_for(queue)
    await consumer.connect()
    try:
        taken = await fetch_all(consumer, 3)
        assert isinstance(taken[1].request, DeadLetter) and taken[1].request.code == "bad_request"
        await consumer.dead_letter(taken[1], taken[1].request)
        await consumer.ack(taken)
        assert await consumer.lag() == 0
    finally:
        await consumer.close()
    ((body, error),) = await queue.dead()
    assert body == b"not json" and error.startswith("bad_request: not JSON")


async def test_setup_creates_what_is_missing_and_then_finds_it(queue: Kit):
    consumer = consumer_for(queue)
    await consumer.connect()  # connect creates what is missing …
    try:
        lines = await consumer.setup()  # … so setup finds it all
        assert lines and all("exists" in line or "stream" in line for line in lines), lines
        assert consumer.describe()
    finally:
        await consumer.close()


@pytest.mark.skipif(not available("redis_stream"), reason="no Redis on 6379")
async def test_xautoclaim_takes_a_dead_members_pending_entries_before_anything_newer():
    k = RedisKit()
    try:
        await k.put([message("c", i) for i in range(5)])
        dead = redis_member(k, "dead", claim_idle=0.5)
        await dead.connect()
        held = await fetch_all(dead, 3)
        await dead.ack(held[:1])
        await dead.close()  # dies holding entries 1 and 2
        await k.put([message("c", i) for i in range(5, 8)])
        heir = redis_member(k, "heir", claim_idle=0.5)
        await heir.connect()
        started = time.monotonic()
        first = await fetch_all(heir, 2)
        # nothing newer was read before the dead member's entries became claimable
        assert datas(first) == [1, 2] and keys(first) == keys(held[1:])
        assert time.monotonic() - started >= 0.4
        await heir.ack(first)
        rest = await fetch_all(heir, 5)
        assert datas(rest) == [3, 4, 5, 6, 7]
        await heir.ack(rest)
        assert await heir.lag() == 0
        await heir.close()
    finally:
        await k.cleanup()


@pytest.mark.skipif(not available("redis_stream"), reason="no Redis on 6379")
async def test_a_member_that_kept_its_name_rereads_its_own_pending_entries_at_once():
    k = RedisKit()
    try:
        await k.put([message("c", i) for i in range(4)])
        before = redis_member(k, "node-a", claim_idle=60)
        await before.connect()
        held = await fetch_all(before, 4)
        await before.close()
        after = redis_member(k, "node-a", claim_idle=60)
        await after.connect()
        again = await fetch_all(after, 4, timeout=5)  # no claim_idle wait: they are its own
        assert keys(again) == keys(held)
        await after.close()
    finally:
        await k.cleanup()


@pytest.mark.skipif(not available("redis_stream"), reason="no Redis on 6379")
async def test_a_redis_entry_without_the_payload_field_is_dead_lettered_with_its_fields():
    from redis.asyncio import Redis

    k = RedisKit()
    try:
        async with Redis.from_url(k.url) as redis:
            await redis.xadd(k.stream, {"other": "x"})
        consumer = consumer_for(k)
        await consumer.connect()
        (taken,) = await fetch_all(consumer, 1)
        assert isinstance(taken.request, DeadLetter)
        await consumer.dead_letter(taken, taken.request)
        await consumer.close()
        async with Redis.from_url(k.url) as redis:
            ((_, fields),) = await redis.xrange(f"{k.stream}:dead")
        assert fields[b"other"] == b"x" and fields[b"error"].startswith(b"bad_request: the entry has no")
        assert fields[b"id"] == taken.id.encode()
    finally:
        await k.cleanup()


async def test_redis_going_away_raises_and_a_reconnect_resumes_where_it_was():
    server = DurableRedis().start()
    try:
        k = RedisKit(server.url)
        await k.put([message("c", i) for i in range(4)])
        consumer = consumer_for(k)
        await consumer.connect()
        taken = await fetch_all(consumer, 2)
        server.kill()
        with pytest.raises(RedisConnectionError):
            await consumer.fetch(10, 0.2)
        with pytest.raises(RedisConnectionError):
            await consumer.connect()
        server.start()
        await consumer.connect()
        again = await fetch_all(consumer, 4)  # its two pending first, then the rest
        assert datas(again) == [0, 1, 2, 3]
        assert keys(again[:2]) == keys(taken)
        await consumer.close()
    finally:
        server.stop()


@pytest.mark.skipif(NATS_SERVER is None, reason="no nats-server binary to start and stop")
async def test_nats_going_away_raises_and_a_reconnect_resumes_where_it_was():
    server = OwnNats().start()
    try:
        k = NatsKit(server.url)
        await k.put([message("c", i) for i in range(4)])
        consumer = consumer_for(k)
        await consumer.connect()
        taken = await fetch_all(consumer, 2)
        await consumer.ack(taken[:1])
        server.kill()
        with pytest.raises(Exception):  # noqa: B017 (the client library's own errors)
            for _ in range(50):
                await consumer.fetch(10, 0.2)
        server.start()
        await consumer.connect()
        again: list[Message] = []
        while not again or datas(again)[-1] != 3:
            again += await fetch_all(consumer, 1)
        # A SIGKILLed nats-server may forget an acknowledgement it confirmed (it writes the
        # consumer's state lazily): then message 0 comes again, with its key, before the rest.
        assert datas(again) in ([1, 2, 3], [0, 1, 2, 3])
        assert keys(again)[-3] == keys(taken)[1]
        await consumer.ack(again)
        await consumer.close()
    finally:
        server.stop()


@pytest.mark.skipif(not available("amqp"), reason="no RabbitMQ on 5672")
async def test_an_amqp_message_without_message_id_gets_a_key_of_its_own():
    import aio_pika

    k = AmqpKit()
    try:
        await k.put([])
        connection = await aio_pika.connect(k.url)
        channel = await connection.channel()
        for _ in range(2):
            await channel.default_exchange.publish(
                aio_pika.Message(message("c", "same")), routing_key=k.queue
            )
        await connection.close()
        consumer = consumer_for(k)
        await consumer.connect()
        taken = await fetch_all(consumer, 2)
        assert len(set(keys(taken))) == 2  # two messages, two publishes (at least once each)
        await consumer.ack(taken)
        await consumer.close()
    finally:
        await k.cleanup()


@pytest.mark.skipif(not available("nats_jetstream"), reason="no NATS on 4222")
async def test_a_missing_jetstream_stream_is_named_with_what_to_do():
    k = NatsKit()  # its stream is never created
    consumer = consumer_for(k)
    try:
        with pytest.raises(SourceUnavailable, match=f"no JetStream stream {k.stream}: the application"):
            await consumer.connect()
    finally:
        await consumer.close()


@pytest.mark.skipif(not available("redis_stream"), reason="no Redis on 6379")
async def test_redis_entries_deleted_or_a_stream_deleted_under_the_consumer_are_survived():
    from redis.asyncio import Redis

    k = RedisKit()
    try:
        await k.put([message("c", i) for i in range(4)])
        consumer = redis_member(k, "node-a")
        await consumer.connect()
        taken = await fetch_all(consumer, 2)
        async with Redis.from_url(k.url) as redis:
            await redis.xdel(k.stream, taken[0].id, (await redis.xrange(k.stream))[-1][0])
            assert await consumer.lag() is None  # a deletion inside the unread range: unknown
        await consumer.release(taken)
        # the deleted pending entry is dropped (and acknowledged), and the re-read goes past it
        again = list(await consumer.fetch(1, 0.1))
        assert datas(again) == [1]
        again += await fetch_all(consumer, 1)
        assert datas(again) == [1, 2]
        await consumer.ack(again)
        async with Redis.from_url(k.url) as redis:
            await redis.delete(k.stream)  # the stream and its group gone
        assert await consumer.fetch(10, 0.1) == []  # NOGROUP: the group is made again
        await k.put([message("c", 9)])
        assert datas(await fetch_all(consumer, 1)) == [9]
        await consumer.close()
    finally:
        await k.cleanup()


@pytest.mark.skipif(not available("redis_stream"), reason="no Redis on 6379")
async def test_a_dead_member_with_nothing_pending_is_removed_from_the_group():
    from redis.asyncio import Redis

    k = RedisKit()
    try:
        await k.put([message("c", 0)])
        gone = redis_member(k, "gone", claim_idle=0.05)
        await gone.connect()
        await gone.ack(await fetch_all(gone, 1))
        await gone.close()
        await asyncio.sleep(0.6)  # idle past 10 × claim_idle
        heir = redis_member(k, "heir", claim_idle=0.05)
        await heir.connect()
        for _ in range(20):
            await heir.fetch(10, 0.05)
            async with Redis.from_url(k.url) as redis:
                members = [m["name"] for m in await redis.xinfo_consumers(k.stream, "tidings")]
            if b"gone" not in members:
                break
        assert b"gone" not in members
        await heir.close()
    finally:
        await k.cleanup()


async def test_consumers_init_and_status_for_a_queue_kind(queue: Kit, tmp_path: Path):
    from tests.test_cli import tidings

    path = tmp_path / "tidings.toml"
    lines = [f"{key} = {json.dumps(value)}" for key, value in queue.settings().items()]
    path.write_text("[consumers.q]\n" + "\n".join(lines) + "\n")
    init = await asyncio.to_thread(tidings, "consumers", "init", "q", "--config", str(path))
    assert init.returncode == 0, init.stderr
    assert "consumer q is ready" in init.stdout
    await queue.put([message("c", i) for i in range(3)])
    status = await asyncio.to_thread(tidings, "consumers", "status", "--config", str(path), "--json")
    assert status.returncode == 0, status.stderr
    row = json.loads(status.stdout)
    assert (row["name"], row["kind"], row["connected"], row["lag"]) == ("q", queue.kind, True, 3)


@pytest.mark.skipif(not available("amqp"), reason="no RabbitMQ on 5672")
async def test_an_amqp_queue_with_a_single_active_consumer_keeps_its_order_across_two_nodes():
    import aio_pika

    k = AmqpKit()
    try:
        connection = await aio_pika.connect(k.url)
        channel = await connection.channel()
        # the application's queue, with its own arguments: the consumers use it as it is
        await channel.declare_queue(k.queue, durable=True, arguments={"x-single-active-consumer": True})
        await connection.close()
        await k.put([message("c", i) for i in range(4)])
        first, second = consumer_for(k), consumer_for(k)
        await first.connect()
        await second.connect()
        taken = await fetch_all(first, 2)
        assert await second.fetch(10, 0.3) == []  # standing by
        await first.ack(taken)
        await first.close()  # gone: the broker hands the queue to the other
        rest = await fetch_all(second, 2)
        assert datas(taken + rest) == [0, 1, 2, 3]
        await second.ack(rest)
        await second.close()
    finally:
        await k.cleanup()


@pytest.mark.skipif(not available("nats_jetstream"), reason="no NATS on 4222")
async def test_a_jetstream_stream_made_again_does_not_reuse_the_keys_of_the_old_one():
    k = NatsKit()
    try:
        await k.put([message("c", "old")])
        consumer = consumer_for(k)
        await consumer.connect()
        old = await fetch_all(consumer, 1)
        await consumer.ack(old)
        await consumer.close()
        await k.cleanup()  # the stream deleted …
        await asyncio.sleep(0.01)
        k._created = False
        await k.put([message("c", "new")])  # … and made again: its first message is 1 again
        consumer = consumer_for(k)
        await consumer.connect()
        new = await fetch_all(consumer, 1)
        await consumer.ack(new)
        await consumer.close()
        assert old[0].id == new[0].id == "1"
        assert keys(old) != keys(new)
    finally:
        await k.cleanup()


@pytest.mark.skipif(not available("redis_stream"), reason="no Redis on 6379")
async def test_a_member_never_claims_back_the_entries_it_holds():
    k = RedisKit()
    try:
        await k.put([message("c", i) for i in range(4)])
        consumer = redis_member(k, "slow", claim_idle=0.1)
        await consumer.connect()
        held = await fetch_all(consumer, 2)
        await asyncio.sleep(0.3)  # idle past claim_idle while it publishes them, slowly
        more = await fetch_all(consumer, 2)
        assert datas(held + more) == [0, 1, 2, 3]
        await consumer.ack(held + more)
        await consumer.close()
    finally:
        await k.cleanup()
