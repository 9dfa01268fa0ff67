"""PostgreSQL outbox → WebSocket benchmark (issue 21, item 6).

    make bench-outbox [BENCH_ARGS="..."]     (or: PYTHONPATH=src python benchmarks/outbox.py ...)
        [--pg postgresql://postgres@127.0.0.1:5432/test] [--broker memory] [--batch-size 500]
        [--messages 20000] [--sustained-rate 5000 --rows 10] [--rate 1000] [--seconds 10]
        [--writers 16] [--no-deflate] [--profile node.prof] [--json out.json]
        (0 for --messages, --sustained-rate or --rate skips that scenario)

A ``tidings serve`` subprocess consumes a fresh outbox table (created with
``tidings.outbox.ddl``, dropped at the end) with a ``postgres`` consumer woken by NOTIFY; one
WebSocket subscriber (``websockets``) on 8 channels records when each message arrives.

- **drain**: ``--messages`` rows committed at once (one ``INSERT … SELECT generate_series``), then
  the time from that commit to the last arrival: messages/s from the outbox to a subscriber;
- **sustained**: ``--sustained-rate`` messages/s for ``--seconds``, ``--rows`` per transaction:
  does the consumer keep up (messages/s delivered, commit → delivery p50/p99/max)?
- **latency**: ``--rate`` transactions/s of one row each (``outbox.write_asyncpg``) for
  ``--seconds``, commit → delivery per message: p50, p99, max.

The paced writers run in a process of their own (``--writers`` connections, each transaction
started at its due time) so that the subscriber stamps arrivals without waiting for them; commit
time is the writer's clock after COMMIT returned, arrival the subscriber's (one machine, one
clock). Each scenario also gives the CPU time per message of the node and of its consumer's
PostgreSQL backend (``/proc``), which the machine's other load moves far less than the rates, and
the output has the load average before and after: on a shared machine the rates are floors.
The subscriber offers permessage-deflate (the ``websockets`` default, as browsers do) unless
``--no-deflate``; ``--profile`` runs the node under cProfile (``python -m pstats node.prof``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
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
    # --profile: the node under cProfile, its stats written when it stops
    profiler = [sys.executable, *(["-m", "cProfile", "-o", str(args.profile)] if args.profile else [])]
    env = {**os.environ, "TIDINGS_LOG_LEVEL": "warning", "TIDINGS_CONFIG": str(config)}
    proc = subprocess.Popen(
        [*profiler, "-m", "tidings", "serve", "--port", str(port), "--broker", args.broker], env=env
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


class CpuMeter:
    """CPU seconds (user + system) used by the node and by its consumer's PostgreSQL backend:
    per message, a measure the machine's other load moves far less than messages/s."""

    def __init__(self, node_pid: int, backend_pid: int | None) -> None:
        self.pids = {"node": node_pid, "pg_backend": backend_pid}

    @staticmethod
    def _cpu(pid: int | None) -> float:
        if pid is None:
            return 0.0
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def read(self) -> dict[str, float]:
        return {name: self._cpu(pid) for name, pid in self.pids.items()}

    def per_message(self, before: dict[str, float], messages: int) -> dict[str, float]:
        after = self.read()
        return {
            f"{name}_cpu_us_per_message": round((after[name] - before[name]) * 1e6 / messages, 1)
            for name in before
            if self.pids[name] is not None
        }


async def consumer_backend(pg: str) -> int | None:
    conn = await asyncpg.connect(pg)
    try:
        pid: int | None = await conn.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'tidings consumer bench'"
        )
        return pid
    finally:
        await conn.close()


class Subscriber:
    def __init__(self, no_deflate: bool = False) -> None:
        self.no_deflate = no_deflate
        self.arrivals: dict[int, float] = {}
        self.event = asyncio.Event()
        self.want = 0

    async def run(self, port: int, ready: asyncio.Event) -> None:
        # websockets offers permessage-deflate, as browsers do: --no-deflate to leave it out
        compression = None if self.no_deflate else "deflate"
        async with connect(f"ws://127.0.0.1:{port}/ws", max_size=None, compression=compression) as ws:
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


async def drain(args: argparse.Namespace, table: str, sub: Subscriber, meter: CpuMeter) -> dict[str, Any]:
    conn = await asyncpg.connect(args.pg)
    cpu = meter.read()
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
        **meter.per_message(cpu, args.messages),
    }


def write_paced(
    pg: str, table: str, first: int, total: int, rows: int, rate: float, writers: int
) -> tuple[dict[int, float], float]:
    """In a process of its own (the subscriber's clock must not wait for the writers' Python):
    ``total`` messages, ``rows`` per transaction, ``rate`` messages/s, each transaction started
    at its due time on one of ``writers`` connections (a late one queues for a connection: the
    rate holds as long as PostgreSQL commits as fast on average). Returns each message's commit
    time (``time.time()`` after COMMIT returned) and the rate reached."""
    return asyncio.run(_write_paced(pg, table, first, total, rows, rate, writers))


async def _write_paced(
    pg: str, table: str, first: int, total: int, rows: int, rate: float, writers: int
) -> tuple[dict[int, float], float]:
    commits: dict[int, float] = {}
    pool = await asyncpg.create_pool(pg, min_size=writers, max_size=writers)
    insert = f"INSERT INTO {table} (partition, channel, data) VALUES ($1, $2, $3::jsonb)"

    async def transaction(seqs: range) -> None:
        async with pool.acquire() as conn, conn.transaction():
            if len(seqs) == 1:  # what an application does
                seq = seqs[0]
                await outbox.write_asyncpg(
                    conn, f"bench:{seq % CHANNELS}", {"seq": seq}, table=table, partition=str(seq % CHANNELS)
                )
            else:  # several messages of one transaction, in one round trip
                await conn.executemany(
                    insert,
                    [(str(seq % CHANNELS), f"bench:{seq % CHANNELS}", f'{{"seq": {seq}}}') for seq in seqs],
                )
        now = time.time()
        for seq in seqs:
            commits[seq] = now

    try:
        start = time.monotonic()
        pending = []
        for n in range(0, total, rows):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(transaction(range(first + n, first + min(n + rows, total)))))
        await asyncio.gather(*pending)
        achieved = total / (time.monotonic() - start)
    finally:
        await pool.close()
    return commits, achieved


async def paced(
    args: argparse.Namespace,
    table: str,
    sub: Subscriber,
    first: int,
    *,
    rate: float,
    seconds: float,
    rows: int,
    meter: CpuMeter,
) -> dict[str, Any]:
    """Commit → delivery at a paced rate: p50/p99/max, and the rate the subscriber got."""
    total = int(rate * seconds)
    loop = asyncio.get_running_loop()
    cpu = meter.read()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        commits, achieved = await loop.run_in_executor(
            pool, write_paced, args.pg, table, first, total, rows, rate, args.writers
        )
    await sub.wait_for(first - 1 + total, timeout=120)
    lat = sorted((sub.arrivals[seq] - t) * 1000 for seq, t in commits.items())
    arrivals = [sub.arrivals[seq] for seq in commits]
    delivered = total / (max(arrivals) - min(commits.values()))
    return {
        "rate_target": rate,
        "rate_achieved": round(achieved),
        "rows_per_transaction": rows,
        "messages": total,
        "delivered_per_second": round(delivered),
        "p50_ms": round(statistics.median(lat), 2),
        "p99_ms": round(lat[int(len(lat) * 0.99) - 1], 2),
        "max_ms": round(lat[-1], 2),
        **meter.per_message(cpu, total),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    table = f"bench_outbox_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(args.pg)
    await conn.execute(outbox.ddl(table))
    await conn.close()
    with tempfile.TemporaryDirectory() as directory:
        proc, port = start_node(args, table, Path(directory))
        try:
            sub = Subscriber(args.no_deflate)
            ready = asyncio.Event()
            task = asyncio.create_task(sub.run(port, ready))
            await asyncio.wait_for(ready.wait(), 30)
            meter = CpuMeter(proc.pid, await consumer_backend(args.pg))
            results: dict[str, Any] = {"load_before": os.getloadavg()[0]}
            first = 1
            if args.messages:
                results["drain"] = await drain(args, table, sub, meter)
                first += args.messages
            if args.sustained_rate:
                results["sustained"] = await paced(
                    args,
                    table,
                    sub,
                    first,
                    rate=args.sustained_rate,
                    seconds=args.seconds,
                    rows=args.rows,
                    meter=meter,
                )
                first += int(args.sustained_rate * args.seconds)
            if args.rate:
                results["latency"] = await paced(
                    args, table, sub, first, rate=args.rate, seconds=args.seconds, rows=1, meter=meter
                )
            results["load_after"] = os.getloadavg()[0]
            task.cancel()  # closes the WebSocket before the node is told to stop
            await asyncio.gather(task, return_exceptions=True)
            return results
        finally:
            # SIGINT under cProfile: uvicorn raises it again once stopped, and KeyboardInterrupt
            # unwinds through cProfile's finally, which writes the stats (SIGTERM would not)
            proc.send_signal(signal.SIGINT if args.profile else signal.SIGTERM)
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
    parser.add_argument("--sustained-rate", type=float, default=5000.0)
    parser.add_argument("--rows", type=int, default=10)
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--no-deflate", action="store_true", help="the subscriber without permessage-deflate")
    parser.add_argument("--profile", type=Path, help="run the node under cProfile, its stats written there")
    arguments = parser.parse_args()
    outcome = asyncio.run(main(arguments))
    print(json.dumps(outcome, indent=2))
    if arguments.json:
        arguments.json.write_text(json.dumps(outcome, indent=2) + "\n")
