"""Queue consumers' throughput (issue 21, item 6): messages/s from a source to a WebSocket subscriber.

    PYTHONPATH=src:. .venv/bin/python benchmarks/consumers_queues.py [--messages 20000] [--batch 500]
        [--kinds redis_stream,nats_jetstream,amqp] [--json benchmarks/results/consumers_queues.json]

For each kind: a fresh ``tidings serve`` subprocess (memory broker) with one consumer
(``batch_size`` = ``--batch``) of a fresh stream / subject / queue on the machine's servers
(Redis 6379, NATS 4222, RabbitMQ 5672); one WebSocket subscriber of the channel (the
``websockets`` library, in this process), subscribed before anything is put into the source.
Then ``--messages`` messages go into the source: Redis in one ``MULTI`` of ``XADD``s and AMQP in one
transaction (``tx.commit``), so they appear at once, as rows an outbox transaction commits; NATS
as core publishes into the stream's subject (then a flush), far faster than they are consumed.

With ``--rate R``, instead: the messages are put one at a time at R/s, each committed before the
next (acknowledged by JetStream, confirmed by RabbitMQ), and the put → delivery latency at the
subscriber is reported (p50, p99, max), with the rate the producer reached.

Reported per kind: **delivered/s** = messages / (the messages available → the last one delivered
at the subscriber: the drain rate), and the producer's rate (put/s). Everything shares the
machine's cores (the producer, the subscriber, the node and the queue server): the figures
compare kinds on one machine, they are not a ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aio_pika
import nats
import orjson
from redis.asyncio import Redis
from tests.consumers.queues import AmqpKit, Kit, NatsKit, RedisKit, available, kit
from tests.stress.helpers import NodeProcess
from websockets.asyncio.client import connect


async def put_fast(k: Kit, bodies: list[bytes]) -> None:
    """Put ``bodies`` into the source in order, as fast as the client allows."""
    if isinstance(k, RedisKit):
        async with Redis.from_url(k.url) as redis, redis.pipeline(transaction=True) as pipe:
            for body in bodies:  # one MULTI: they appear at once
                pipe.xadd(k.stream, {"payload": body})
            await pipe.execute()
    elif isinstance(k, NatsKit):
        nc = await nats.connect(k.url)
        try:
            for body in bodies:
                await nc.publish(k.subject, body)
            await nc.flush()
        finally:
            await nc.close()
    else:
        assert isinstance(k, AmqpKit)
        connection = await aio_pika.connect(k.url)
        try:
            channel = await connection.channel(publisher_confirms=False)
            async with channel.transaction():  # committed at once: they appear at once
                for body in bodies:
                    await channel.default_exchange.publish(aio_pika.Message(body), routing_key=k.queue)
        finally:
            await connection.close()


async def put_paced(k: Kit, channel: str, messages: int, rate: float) -> float:
    """Put ``messages`` one at a time at ``rate``/s, each committed before the next (Redis:
    ``XADD``; NATS: a JetStream publish, acknowledged; AMQP: a publish confirmed by the broker),
    each carrying the time it was put. Returns the rate reached."""

    def body(i: int) -> bytes:
        return orjson.dumps({"channel": channel, "data": {"n": i, "t": time.time()}})

    started = time.monotonic()

    async def pace(i: int) -> None:
        delay = started + (i + 1) / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    if isinstance(k, RedisKit):
        async with Redis.from_url(k.url) as redis:
            for i in range(messages):
                await redis.xadd(k.stream, {"payload": body(i)})
                await pace(i)
    elif isinstance(k, NatsKit):
        nc = await nats.connect(k.url)
        try:
            js = nc.jetstream()
            for i in range(messages):
                await js.publish(k.subject, body(i))
                await pace(i)
        finally:
            await nc.close()
    else:
        assert isinstance(k, AmqpKit)
        connection = await aio_pika.connect(k.url)
        try:
            channel_ = await connection.channel(publisher_confirms=True)
            for i in range(messages):
                await channel_.default_exchange.publish(aio_pika.Message(body(i)), routing_key=k.queue)
                await pace(i)
        finally:
            await connection.close()
    return messages / (time.monotonic() - started)


async def run_kind(
    kind: str, messages: int, batch: int, workdir: Path, rate: float | None = None
) -> dict[str, Any]:
    k = kit(kind)
    if isinstance(k, NatsKit):
        await k.create()
    elif isinstance(k, AmqpKit):
        await k.put([])
    channel = f"bench:{k.tag}"
    settings = {**k.settings(), "batch_size": batch, "poll_interval": 0.05}
    node = NodeProcess(workdir, broker="memory", settings={"consumers": {"bench": settings}})
    node.start()
    try:
        async with connect(f"ws://127.0.0.1:{node.port}/ws", max_size=None) as ws:
            await ws.send(orjson.dumps({"op": "subscribe", "ref": 1, "channel": channel}).decode())
            while orjson.loads(await ws.recv()).get("op") != "subscribed":
                pass
            received = 0
            latencies: list[float] = []

            async def receive() -> float:
                nonlocal received
                while received < messages:
                    frame = orjson.loads(await asyncio.wait_for(ws.recv(), 60))
                    if frame.get("op") == "message":
                        received += 1
                        if "t" in frame["data"]:
                            latencies.append(time.time() - frame["data"]["t"])
                return time.monotonic()

            if rate is not None:
                reader = asyncio.create_task(receive())
                reached = await put_paced(k, channel, messages, rate)
                await reader
                latencies.sort()
                return {
                    "kind": kind,
                    "messages": messages,
                    "rate_asked": rate,
                    "rate_reached": round(reached),
                    "latency_p50_ms": round(statistics.median(latencies) * 1000, 1),
                    "latency_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
                    "latency_max_ms": round(latencies[-1] * 1000, 1),
                }
            bodies = [orjson.dumps({"channel": channel, "data": {"n": i}}) for i in range(messages)]
            reader = asyncio.create_task(receive())
            started = time.monotonic()
            await put_fast(k, bodies)
            available = time.monotonic()
            finished = await reader
    finally:
        node.stop()
        await k.cleanup()
    # Redis and AMQP: the messages appear when the transaction commits (``available``);
    # NATS: as they are published, far faster than they are consumed (``put_per_s``).
    since = started if isinstance(k, NatsKit) else available
    return {
        "kind": kind,
        "messages": messages,
        "batch_size": batch,
        "delivered_per_s": round(messages / (finished - since)),
        "put_per_s": round(messages / (available - started)),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--kinds", default="redis_stream,nats_jetstream,amqp")
    parser.add_argument(
        "--rate", type=float, help="instead of the drain: put one message at a time at this rate (latency)"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tidings-bench-consumers-"))  # the nodes' logs
    results = []
    for kind in args.kinds.split(","):
        if not available(kind):
            print(f"{kind}: no server, skipped")
            continue
        result = await run_kind(kind, args.messages, args.batch, workdir, args.rate)
        results.append(result)
        print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
