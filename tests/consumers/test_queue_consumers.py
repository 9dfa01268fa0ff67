"""The Redis Streams, NATS JetStream and AMQP consumers end to end, against the real servers:
messages put into the source reach WebSocket and SSE subscribers exactly once and in order; a
bad one is dead-lettered without holding back the rest; a node SIGKILLed between publish and
acknowledgement makes no duplicate; the proofs under faults (issue 21, item 5)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.consumers.queues import (
    KINDS,
    NATS_SERVER,
    RABBITMQ_SERVER,
    DurableRedis,
    Kit,
    NatsKit,
    OwnNats,
    OwnRabbit,
    available,
    kit,
    message,
)
from tests.redis_server import free_port
from tests.serving import serve
from tests.stress.helpers import Consumer, NodeProcess, close_all, wait_for
from tidings.core.position import Position

NAMESPACES = {"q": {"history_size": 20000, "presence": False, "join_leave": False}}


def consumer_settings(k: Kit, **extra: Any) -> dict[str, Any]:
    """The kit's ``[consumers.NAME]`` with short waits, so a test sees redeliveries soon."""
    return {
        **k.settings(),
        "poll_interval": 0.2,
        "claim_idle": 1.0,
        "retry_base": 0.05,
        "retry_max": 0.5,
        **extra,
    }


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


async def watch(url: str, channel: str, transports: tuple[str, ...] = ("ws", "sse")) -> list[Consumer]:
    """Subscribers on ``transports`` reading ``channel`` from its first publication (a probe,
    published to learn the channel's epoch: a consumer may have published before it), each
    keeping a ledger."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        probe = (await http.post("/api/publish", json={"channel": channel, "data": "probe"})).json()
    subscribers = [
        Consumer(url, channel, transport, Position(probe["epoch"], 0), name=transport)
        for transport in transports
    ]
    for subscriber in subscribers:
        subscriber.start()
    return subscribers


def data_of(subscriber: Consumer) -> list[Any]:
    return [p.data for p in subscriber.ledger.publications if p.data != "probe"]


async def until_seen(subscribers: list[Consumer], count: int, timeout: float = 60) -> None:
    await wait_for(
        lambda: all(len(data_of(s)) >= count or s.ledger.error for s in subscribers),
        timeout,
        f"{count} publications at every subscriber",
    )


def assert_exactly_once_in_order(subscribers: list[Consumer], expected: list[Any]) -> None:
    for subscriber in subscribers:
        assert subscriber.ledger.error is None, subscriber.ledger.error
        assert not subscriber.ledger.gaps, subscriber.ledger.gaps
        got = data_of(subscriber)
        duplicates = len(got) - len(set(map(repr, got)))
        assert got == expected, f"{subscriber.ledger.name}: {len(got)} of {len(expected)}, {duplicates} dup"


async def test_every_message_reaches_websocket_and_sse_once_and_in_order(queue: Kit):
    channel = f"q:{queue.tag}"
    with serve(namespaces=NAMESPACES, consumers={"q": consumer_settings(queue)}) as running:
        subscribers = await watch(running.url, channel)
        try:
            await queue.put([message(channel, i) for i in range(200)], ids=[f"m{i}" for i in range(200)])
            await until_seen(subscribers, 200)
            await asyncio.sleep(0.5)  # anything more would come now
        finally:
            await close_all(subscribers)
    assert_exactly_once_in_order(subscribers, list(range(200)))


async def test_a_bad_message_is_dead_lettered_and_never_blocks_the_ones_behind_it(queue: Kit):
    channel = f"q:{queue.tag}"
    bodies = [
        message(channel, 0),
        b"not json",
        message("not a channel!", 1),
        message(channel, 2, unknown="field"),
        message(channel, 3),
    ]
    with serve(namespaces=NAMESPACES, consumers={"q": consumer_settings(queue)}) as running:
        subscribers = await watch(running.url, channel)
        try:
            await queue.put(bodies)
            await until_seen(subscribers, 2)
            dead: list[tuple[bytes, str]] = []
            for _ in range(100):
                dead = await queue.dead()
                if len(dead) >= 3:
                    break
                await asyncio.sleep(0.1)
        finally:
            await close_all(subscribers)
        names = (
            "tidings_consumer_published_total",
            "tidings_consumer_dead_lettered_total",
            "tidings_consumer_lag",
        )
        metrics: list[float] = []
        for _ in range(100):  # the lag is read at most once a second
            metrics = await asyncio.to_thread(scrape, running.url, *names)
            if metrics == [2, 3, 0]:
                break
            await asyncio.sleep(0.1)
    assert_exactly_once_in_order(subscribers, [0, 3])
    assert metrics == [2, 3, 0]
    assert [body for body, _ in dead] == bodies[1:4]
    assert [error.split(":")[0] for _, error in dead] == ["bad_request"] * 3
    assert "not JSON" in dead[0][1] and "unknown" in dead[2][1]


@pytest.mark.parametrize(
    ("kind", "url"),
    [
        ("redis_stream", "redis://127.0.0.1:{port}/0"),
        ("nats_jetstream", "nats://127.0.0.1:{port}"),
        ("amqp", "amqp://guest:guest@127.0.0.1:{port}/"),
    ],
)
async def test_a_source_out_of_reach_fails_readyz_and_is_tried_again_until_it_answers(kind: str, url: str):
    port = free_port()  # nothing listens there
    settings = {"kind": kind, "url": url.format(port=port), "stream": "S", "queue": "q"}
    settings.update(retry_base=0.05, retry_max=0.2)
    with serve(consumers={"q": settings}) as running:
        async with httpx.AsyncClient(base_url=running.url, timeout=10) as http:
            for _ in range(200):
                ready = await http.get("/readyz")
                if ready.status_code == 503:
                    break
                await asyncio.sleep(0.05)
            assert ready.status_code == 503
            assert "consumer q cannot reach its source" in ready.json()["error"]["message"]
            await wait_for(
                lambda: scrape(running.url, "tidings_consumer_reconnects_total")[0] >= 3, 30, "retries"
            )
            if kind != "redis_stream":
                return
            redis = DurableRedis()
            redis.port = port
            redis.start()  # the source comes (back): the consumer reaches it, /readyz is happy
            try:
                for _ in range(200):
                    if (await http.get("/readyz")).status_code == 200:
                        break
                    await asyncio.sleep(0.05)
                assert (await http.get("/readyz")).status_code == 200
                assert scrape(running.url, "tidings_consumer_connected") == [1]
            finally:
                redis.stop()


# crashes and restarts -------------------------------------------------------------------------


def own_source(kind: str) -> Any:
    """A server of ``kind`` this test may restart (never the machine's shared one), or None."""
    if kind == "redis_stream":
        return DurableRedis().start()
    if kind == "nats_jetstream" and NATS_SERVER is not None:
        return OwnNats().start()
    if kind == "amqp":
        return OwnRabbit().start()
    return None


async def restart(server: Any) -> None:
    if isinstance(server, DurableRedis):
        server.kill()  # every write was fsynced (appendfsync always): nothing acknowledged is lost
    elif isinstance(server, OwnRabbit):
        # A clean stop: the test's producer publishes persistent messages to a durable queue
        # without publisher confirms, so a SIGKILL could lose some it never knew were stored.
        # Stopping takes its time (the node stops its queues): the consumer sees the broker
        # close the connection, retries, and reconnects once the node is back.
        await asyncio.to_thread(server.restart)
        return
    else:
        # JetStream writes its files lazily: a SIGKILL may lose what it confirmed; a restart is
        # a clean stop (SIGTERM) and start
        assert server.process is not None
        server.process.terminate()
        await asyncio.to_thread(server.process.wait, 15)
    await asyncio.sleep(0.5)  # the consumer sees the source gone and retries
    await asyncio.to_thread(server.start)


def scrape(url: str, *names: str) -> list[float]:
    """The values of the metrics ``names`` (summed over their labels) on the node at ``url``."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    lines = text.splitlines()
    return [sum(float(x.rsplit(" ", 1)[1]) for x in lines if x.startswith((n + " ", n + "{"))) for n in names]


async def until_stored(url: str, channel: str, count: int, timeout: float = 120) -> None:
    """Poll the channel's latest offset until ``count`` messages (after the probe) were stored:
    the node is then busy publishing (the subscribers may trail far behind)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        while True:
            body = (await http.get(f"/api/channels/{channel}/history", params={"limit": 1})).json()
            if body["offset"] > count:
                return
            assert loop.time() < deadline, f"{body['offset']} of {count} stored"
            await asyncio.sleep(0.01)


async def run_under_faults(kind: str, tmp_path: Path, count: int, kills: int, *, batch: int) -> None:
    """``count`` messages through a node SIGKILLed ``kills`` times and the source restarted
    once, after the first kill (a server of the test's own: a private redis-server, nats-server
    or RabbitMQ node), then the ledger check: every message
    at the WebSocket and SSE subscribers exactly once and in order.

    With ``batch`` = ``count`` every message is put before the node starts, so the node takes
    them in one batch and acknowledges it only after the last publish: the first kill lands
    between publish and acknowledgement, and the node after it gets the published messages
    again. That is checked too: its consumer published more than the hub took (the hub
    dropped the second publishes by their idempotency keys)."""
    server = await asyncio.to_thread(own_source, kind)
    k = kit(kind, server.url if server is not None else None)
    if isinstance(k, NatsKit):
        await k.create()
    channel = f"q:{k.tag}"
    bodies = [message(channel, i) for i in range(count)]
    ids = [f"m{i}" for i in range(count)]
    node = NodeProcess(
        tmp_path,
        broker=f"sqlite:///{tmp_path / 'tidings.db'}",  # the idempotency keys survive the kills
        settings={"namespaces": NAMESPACES, "consumers": {"q": consumer_settings(k, batch_size=batch)}},
    )
    subscribers: list[Consumer] = []
    try:
        upfront = batch >= count
        if upfront:
            await k.put(bodies, ids)
        node.start()
        subscribers = await watch(node.url, channel)
        producer = asyncio.create_task(asyncio.sleep(0) if upfront else k.put(bodies, ids))
        for n in range(kills):
            await until_stored(node.url, channel, (n + 1) * count // (kills + 3))
            node.kill()
            await asyncio.to_thread(node.start)
            if n == 0 and server is not None:
                await producer  # the source restarts with every message in it (put has no retry)
                await restart(server)
        await producer
        await until_seen(subscribers, count, timeout=600)
        await asyncio.sleep(1.0)  # a duplicate would come now
        published, stored = await asyncio.to_thread(
            scrape, node.url, "tidings_consumer_published_total", "tidings_publications_total"
        )
    finally:
        await close_all(subscribers)
        node.stop()
        await k.cleanup()
        if server is not None:
            server.stop()
    assert_exactly_once_in_order(subscribers, list(range(count)))
    if upfront:
        assert published > stored, f"no message came twice ({published} published, {stored} stored)"


def skip_without_own_source(kind: str) -> None:
    if kind == "amqp" and RABBITMQ_SERVER is None:
        pytest.skip("no rabbitmq-server script to start a private RabbitMQ node (the proof restarts it)")
    if kind == "nats_jetstream" and NATS_SERVER is None and not available(kind):
        pytest.skip("no nats-server binary and no NATS on 4222")


@pytest.mark.parametrize("kind", KINDS)
async def test_a_node_sigkilled_between_publish_and_ack_makes_no_duplicate(kind: str, tmp_path: Path):
    skip_without_own_source(kind)
    await run_under_faults(kind, tmp_path, count=1000, kills=1, batch=1000)


@pytest.mark.long
@pytest.mark.timeout(900)
@pytest.mark.parametrize("kind", KINDS)
async def test_ten_thousand_messages_through_two_sigkills_and_a_source_restart(kind: str, tmp_path: Path):
    skip_without_own_source(kind)
    await run_under_faults(kind, tmp_path, count=10_000, kills=2, batch=200)
