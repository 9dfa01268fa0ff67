"""The Redis Streams, NATS JetStream and AMQP sources against the real servers, below the consumer:
order, acknowledgement, redelivery with the same ids, dead letters, lag, claims, outages."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

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
from tidings.consumers.amqp import AmqpSource
from tidings.consumers.delivery import Delivery
from tidings.consumers.nats_jetstream import NatsJetStreamSource
from tidings.consumers.redis_stream import RedisStreamSource

Source = RedisStreamSource | NatsJetStreamSource | AmqpSource


def source_for(k: Kit, **options: Any) -> Source:
    if isinstance(k, RedisKit):
        return RedisStreamSource(
            url=k.url, stream=k.stream, consumer=options.pop("consumer", "one"), block=0.2, **options
        )
    if isinstance(k, NatsKit):
        return NatsJetStreamSource(
            url=k.url,
            subject=k.subject,
            durable=k.durable,
            dead_letter_subject=k.dead_subject,
            dead_letter_stream=k.dead_stream,
            fetch_wait=0.2,
            **options,
        )
    assert isinstance(k, AmqpKit)
    return AmqpSource(url=k.url, queue=k.queue, fetch_wait=0.2, **options)


async def take_all(source: Source, count: int, timeout: float = 30) -> list[Delivery]:
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        assert time.monotonic() < deadline, f"took {len(got)} of {count}"
        got += await source.take(count - len(got))
    return got


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


async def test_messages_come_in_order_with_stable_ids_and_come_again_until_acknowledged(queue: Kit):
    bodies = [message("c", i) for i in range(10)]
    await queue.put(bodies, ids=[f"m{i}" for i in range(10)])
    options = {"ack_wait": 1.0} if isinstance(queue, NatsKit) else {}
    first = source_for(queue, **options)
    await first.connect()
    try:
        taken = await take_all(first, 10)
        assert [d.body for d in taken] == bodies
        assert all(d.id for d in taken) and len({d.id for d in taken}) == 10
        assert not any(d.redelivered for d in taken)
        await first.ack(taken[:4])
        assert await first.lag() == 6  # taken, not acknowledged
    finally:
        await first.close()  # gone without acknowledging the other six
    second = source_for(queue, **options)
    await second.connect()
    try:
        again = await take_all(second, 6)
        assert [d.id for d in again] == [d.id for d in taken[4:]]  # same ids: same idempotency keys
        assert [d.body for d in again] == bodies[4:]
        assert all(d.redelivered for d in again)
        await second.ack(again)
        await asyncio.sleep(0.3)
        assert await second.take(10) == []
        assert await second.lag() == 0
    finally:
        await second.close()


async def test_a_dead_letter_keeps_the_message_and_its_error_and_frees_the_ones_behind(queue: Kit):
    bodies = [message("c", 0), b"not json", message("c", 2)]
    await queue.put(bodies)
    source = source_for(queue)
    await source.connect()
    try:
        taken = await take_all(source, 3)
        await source.ack(taken[:1])
        await source.dead_letter(taken[1], "bad_request: not JSON")
        await source.ack(taken[2:])
        assert await source.lag() == 0
    finally:
        await source.close()
    assert await queue.dead() == [(b"not json", "bad_request: not JSON")]


@pytest.mark.skipif(not available("redis_stream"), reason="no Redis on 6379")
async def test_xautoclaim_takes_a_dead_consumers_pending_entries_before_anything_newer():
    k = RedisKit()
    try:
        await k.put([message("c", i) for i in range(5)])
        dead = source_for(k, consumer="dead", min_idle=0.5)
        await dead.connect()
        held = await take_all(dead, 3)
        await dead.ack(held[:1])
        await dead.close()  # dies holding entries 1 and 2
        await k.put([message("c", i) for i in range(5, 8)])
        heir = source_for(k, consumer="heir", min_idle=0.5)
        await heir.connect()
        started = time.monotonic()
        first = await take_all(heir, 2)
        # nothing newer was read before the dead consumer's entries became claimable
        assert [d.id for d in first] == [d.id for d in held[1:]]
        assert all(d.redelivered for d in first)
        assert time.monotonic() - started >= 0.4
        await heir.ack(first)
        rest = await take_all(heir, 5)
        assert [d.body for d in rest] == [message("c", i) for i in range(3, 8)]
        await heir.ack(rest)
        assert await heir.lag() == 0
        await heir.close()
    finally:
        await k.cleanup()


@pytest.mark.skipif(not available("redis_stream"), reason="no Redis on 6379")
async def test_a_restarted_consumer_with_its_old_name_rereads_its_own_pending_entries_at_once():
    k = RedisKit()
    try:
        await k.put([message("c", i) for i in range(4)])
        before = source_for(k, consumer="node-a", min_idle=60)
        await before.connect()
        held = await take_all(before, 4)
        await before.close()
        after = source_for(k, consumer="node-a", min_idle=60)
        await after.connect()
        again = await take_all(after, 4, timeout=5)  # no min_idle wait: they are its own
        assert [d.id for d in again] == [d.id for d in held]
        await after.close()
    finally:
        await k.cleanup()


@pytest.mark.skipif(not available("redis_stream"), reason="no Redis on 6379")
async def test_a_redis_entry_without_the_payload_field_reads_as_an_empty_body():
    k = RedisKit()
    try:
        from redis.asyncio import Redis

        async with Redis.from_url(k.url) as redis:
            await redis.xadd(k.stream, {"other": "x"})
        source = source_for(k)
        await source.connect()
        (taken,) = await take_all(source, 1)
        assert taken.body == b""
        await source.dead_letter(taken, "bad_request: no payload field")
        await source.close()
        async with Redis.from_url(k.url) as redis:
            (entry,) = await redis.xrange(f"{k.stream}:dead")
        assert entry[1][b"other"] == b"x" and entry[1][b"error"] == b"bad_request: no payload field"
    finally:
        await k.cleanup()


async def test_redis_going_away_raises_and_a_reconnect_resumes_where_it_was():
    server = DurableRedis().start()
    try:
        k = RedisKit(server.url)
        await k.put([message("c", i) for i in range(4)])
        source = source_for(k, consumer="node-a")
        await source.connect()
        taken = await take_all(source, 2)
        server.kill()
        with pytest.raises(ConnectionError):
            await source.take(10)
        server.start()
        await source.connect()
        again = await take_all(source, 4)  # its two pending first, then the rest
        assert [d.body for d in again] == [message("c", i) for i in range(4)]
        assert [d.id for d in again[:2]] == [d.id for d in taken]
        await source.close()
    finally:
        server.stop()


@pytest.mark.skipif(NATS_SERVER is None, reason="no nats-server binary to start and stop")
async def test_nats_going_away_raises_and_a_reconnect_resumes_where_it_was():
    server = OwnNats().start()
    try:
        k = NatsKit(server.url)
        await k.put([message("c", i) for i in range(4)])
        source = source_for(k, ack_wait=1.0)
        await source.connect()
        taken = await take_all(source, 2)
        await source.ack(taken[:1])
        server.kill()
        with pytest.raises(ConnectionError):
            for _ in range(50):
                await source.take(10)
        server.start()
        await source.connect()
        again: list[Delivery] = []
        while not again or again[-1].body != message("c", 3):
            again += await take_all(source, 1)
        # A SIGKILLed nats-server may forget the acknowledgement it confirmed (it writes the
        # consumer's state lazily): then the first message comes again, with its id (and so its
        # idempotency key), before the rest in order.
        bodies = [d.body for d in again]
        assert bodies in ([message("c", i) for i in range(1, 4)], [message("c", i) for i in range(4)])
        assert again[0].id == (taken[1].id if len(again) == 3 else taken[0].id)
        await source.ack(again)
        await source.close()
    finally:
        server.stop()
