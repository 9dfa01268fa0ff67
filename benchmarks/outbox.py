"""PostgreSQL outbox → WebSocket benchmark (issue 21, item 6).

    PYTHONPATH=src python benchmarks/outbox.py [--pg postgresql://postgres@127.0.0.1:5432/test]
        [--messages 20000] [--rate 1000] [--seconds 10] [--broker memory] [--batch-size 500]
        [--json out.json]

A ``tidings serve`` subprocess consumes a fresh outbox table (created with
``tidings.outbox.ddl``, dropped at the end) with a ``postgres`` consumer woken by NOTIFY; one
WebSocket subscriber (``websockets``) on 8 channels records when each message arrives.

- **drain**: ``--messages`` rows committed at once (one ``INSERT … SELECT generate_series``), then
  the time from that commit to the last arrival: messages/s from the outbox to a subscriber;
- **latency**: ``--rate`` transactions/s of one row each for ``--seconds`` (8 writer connections,
  paced), commit → delivery per message (the writer's clock after COMMIT returned, the
  subscriber's at arrival; one machine, one clock): p50, p99, max.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.redis_server import free_port

from tidings import outbox

CHANNELS = 8


def start_node(args: argparse.Namespace, table: str, directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = directory / "tidings.toml"
    config.write_text(
        f"""
[namespaces.bench]
history_size = 100

[flow]
enabled = false

[consumers.bench]
kind = "postgres"
url = "{args.pg}"
table = "{table}"
batch_size = {args.batch_size}
poll_interval = 1.0
"""
    )
    env = {**os.environ, "TIDINGS_LOG_LEVEL": "warning", "TIDINGS_CONFIG": str(config)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidings", "serve", "--port", str(port), "--broker", args.broker], env=env
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("tidings did not start")


class Subscriber:
    def __init__(self) -> None:
        self.arrivals: dict[int, float] = {}
        self.event = asyncio.Event()
        self.want = 0

    async def run(self, port: int, ready: asyncio.Event) -> None:
        async with connect(f"ws://127.0.0.1:{port}/ws", max_size=None) as ws:
            for k in range(CHANNELS):
                await ws.send(orjson.dumps({"op": "subscribe", "ref": k, "channel": f"bench:{k}"}).decode())
            subscribed = 0
            while subscribed < CHANNELS:
                if orjson.loads(await ws.recv())["op"] == "subscribed":
                    subscribed += 1
            ready.set()
            async for frame in ws:
                now = time.time()
                message = orjson.loads(frame)
                if message.get("op") == "message":
                    self.arrivals[message["data"]["seq"]] = now
                    if len(self.arrivals) >= self.want:
                        self.event.set()

    async def wait_for(self, count: int, timeout: float) -> None:
        self.want = count
        if len(self.arrivals) < count:
            self.event.clear()
            await asyncio.wait_for(self.event.wait(), timeout)


async def drain(args: argparse.Namespace, table: str, sub: Subscriber) -> dict[str, Any]:
    conn = await asyncpg.connect(args.pg)
    try:
        await conn.execute(
            f"INSERT INTO {table} (partition, channel, data) SELECT (s % {CHANNELS})::text, "
            f"'bench:' || (s % {CHANNELS}), jsonb_build_object('seq', s, 'pad', repeat('x', 100)) "
            f"FROM generate_series(1, {args.messages}) AS s"
        )
        committed = time.time()
    finally:
        await conn.close()
    await sub.wait_for(args.messages, timeout=600)
    seconds = max(sub.arrivals.values()) - committed
    return {
        "messages": args.messages,
        "seconds": round(seconds, 3),
        "per_second": round(args.messages / seconds),
    }


async def latency(args: argparse.Namespace, table: str, sub: Subscriber, first: int) -> dict[str, Any]:
    commits: dict[int, float] = {}
    total = int(args.rate * args.seconds)
    writers = 8
    start = time.monotonic()

    async def writer(w: int) -> None:
        conn = await asyncpg.connect(args.pg)
        try:
            for n in range(w, total, writers):
                due = start + n / args.rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                seq = first + n
                async with conn.transaction():
                    await outbox.write_asyncpg(
                        conn,
                        f"bench:{seq % CHANNELS}",
                        {"seq": seq},
                        table=table,
                        partition=str(seq % CHANNELS),
                    )
                commits[seq] = time.time()
        finally:
            await conn.close()

    await asyncio.gather(*(writer(w) for w in range(writers)))
    achieved = total / (time.monotonic() - start)
    await sub.wait_for(first - 1 + total, timeout=120)
    lat = sorted((sub.arrivals[seq] - t) * 1000 for seq, t in commits.items())
    return {
        "rate_target": args.rate,
        "rate_achieved": round(achieved),
        "messages": total,
        "p50_ms": round(statistics.median(lat), 2),
        "p99_ms": round(lat[int(len(lat) * 0.99) - 1], 2),
        "max_ms": round(lat[-1], 2),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    table = f"bench_outbox_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(args.pg)
    await conn.execute(outbox.ddl(table))
    await conn.close()
    with tempfile.TemporaryDirectory() as directory:
        proc, port = start_node(args, table, Path(directory))
        try:
            sub = Subscriber()
            ready = asyncio.Event()
            task = asyncio.create_task(sub.run(port, ready))
            await asyncio.wait_for(ready.wait(), 30)
            results = {"drain": await drain(args, table, sub)}
            results["latency"] = await latency(args, table, sub, args.messages + 1)
            task.cancel()  # closes the WebSocket before the node is told to stop
            await asyncio.gather(task, return_exceptions=True)
            return results
        finally:
            proc.terminate()
            proc.wait(30)
            conn = await asyncpg.connect(args.pg)
            await conn.execute(f"DROP TABLE IF EXISTS {table}, {table}_dead")
            await conn.execute(f"DROP FUNCTION IF EXISTS {table}_notify() CASCADE")
            await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--broker", default="memory")
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    outcome = asyncio.run(main(arguments))
    print(json.dumps(outcome, indent=2))
    if arguments.json:
        arguments.json.write_text(json.dumps(outcome, indent=2) + "\n")
