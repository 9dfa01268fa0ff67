"""Scale-out benchmark (issue 6): the Redis broker against the in-memory one, 1 and 2 nodes.

    PYTHONPATH=src .venv/bin/python benchmarks/redis_broker.py [--subs 500] [--msgs 500]
        [--publish-seconds 5] [--publishers 16] [--json benchmarks/results/redis_broker.json]

Everything on loopback, on this machine: a fresh ``redis-server`` (no persistence) on a free port
and fresh ``tidings serve`` subprocesses (not pinned to a core; the OS schedules them, the load
generator and Redis on the same cores). Scenarios, each bounded by timeouts:

1. **WebSocket fan-out**: ``--subs`` WebSocket subscribers of one channel (the ``websockets``
   library, all in this process), ``--msgs`` publications through ``POST /api/publish`` (8
   concurrent publisher tasks) on the first node; deliveries/s = deliveries received / (first
   publish → last delivery), lost = expected − received (after a 30 s quiet deadline). Run with
   the memory broker on 1 node, the Redis broker on 1 node, and the Redis broker on 2 nodes
   (subscribers split evenly, publications through node 1).
2. **Publications/s through tidings into one Redis**: ``--publishers`` client tasks (httpx,
   keep-alive) POST to 100 channels for ``--publish-seconds``, against 1 node and 2 nodes
   (tasks split), and against 1 memory-broker node for reference. No subscribers.

The load generator is Python in one process, so on a small machine it is a large part of what is
measured; the figures compare brokers and node counts under the same generator, they are not
tidings' ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.nodes import NodeProcess  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

NODE_ENV = {
    "PYTHONPATH": str(ROOT / "src"),
    "TIDINGS_LIMITS__MAX_CONNECTIONS_PER_USER": "100000",
    "TIDINGS_LIMITS__MAX_CONNECTIONS_PER_IP": "100000",
}
CHANNEL = "bench:fanout"


@contextlib.contextmanager
def nodes(broker: str, count: int) -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    try:
        for _ in range(count):
            started.append(NodeProcess(broker=broker, env=NODE_ENV).start(timeout=30))
        yield started
    finally:
        for node in started:
            node.stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds used by each named process (and this generator) between start and stop."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = {name: cpu_seconds(pid) for name, pid in pids.items()}
        self.start["generator"] = time.process_time()

    def stop(self) -> dict[str, float]:
        now = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        now["generator"] = time.process_time()
        return {name: round(now[name] - self.start[name], 2) for name in now}


def pids(redis_server: RedisServer | None, started: list[NodeProcess]) -> dict[str, int]:
    found = {f"node{n + 1}": node.proc.pid for n, node in enumerate(started) if node.proc is not None}
    if redis_server is not None and redis_server.process is not None:
        found["redis"] = redis_server.process.pid
    return found


async def subscriber(
    url: str,
    ready: asyncio.Event,
    counts: list[int],
    index: int,
    last: list[float],
    expected: int,
    deadline: float,
) -> None:
    async with connect(url, max_size=2**22, open_timeout=20, ping_interval=None) as ws:
        await ws.send(json.dumps({"op": "subscribe", "channel": CHANNEL, "ref": 1}))
        while True:
            reply = json.loads(await asyncio.wait_for(ws.recv(), 20))
            if reply.get("op") == "subscribed":
                break
        ready.set()
        await read_until(ws, counts, index, last, expected, deadline)


async def read_until(
    ws: ClientConnection, counts: list[int], index: int, last: list[float], expected: int, deadline: float
) -> None:
    loop = asyncio.get_running_loop()
    while counts[index] < expected:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        try:
            frame = await asyncio.wait_for(ws.recv(), remaining)
        except (TimeoutError, websockets.ConnectionClosed):
            return
        if isinstance(frame, str) and frame.startswith('{"op":"message"'):
            counts[index] += 1
            last[0] = time.perf_counter()


async def fanout(
    urls: list[str], publish_url: str, subs: int, msgs: int, meter_pids: dict[str, int]
) -> dict[str, Any]:
    counts = [0] * subs
    last = [0.0]
    loop = asyncio.get_running_loop()
    readies = [asyncio.Event() for _ in range(subs)]
    deadline = loop.time() + 60 + msgs * subs / 2000  # generous, but bounded
    tasks = []
    for i in range(subs):
        tasks.append(
            asyncio.create_task(subscriber(urls[i % len(urls)], readies[i], counts, i, last, msgs, deadline))
        )
        if i % 50 == 49:
            await asyncio.sleep(0)
    try:
        async with asyncio.timeout(60):
            await asyncio.gather(*(ready.wait() for ready in readies))
    except TimeoutError:
        failed = [t.exception() for t in tasks if t.done() and t.exception() is not None]
        raise RuntimeError(f"subscribers not ready; first errors: {failed[:3]}") from None
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(msgs):
        queue.put_nowait(n)

    async def publisher(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            n = queue.get_nowait()
            response = await client.post("/api/publish", json={"channel": CHANNEL, "data": n})
            response.raise_for_status()

    meter = CpuMeter(meter_pids)
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=publish_url, timeout=30) as client:
        await asyncio.gather(*(publisher(client) for _ in range(8)))
    published = time.perf_counter()
    await asyncio.gather(*tasks, return_exceptions=True)
    received = sum(counts)
    elapsed = max(last[0], published) - started
    return {
        "subscribers": subs,
        "messages": msgs,
        "expected": subs * msgs,
        "received": received,
        "lost": subs * msgs - received,
        "publish_seconds": round(published - started, 3),
        "seconds": round(elapsed, 3),
        "deliveries_per_s": round(received / elapsed) if elapsed > 0 else 0,
        "cpu_seconds": meter.stop(),
    }


async def publish_rate(
    urls: list[str], publishers: int, seconds: float, meter_pids: dict[str, int]
) -> dict[str, Any]:
    ok = 0
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker(client: httpx.AsyncClient, n: int) -> None:
        nonlocal ok, errors
        i = 0
        while time.perf_counter() < stop_at:
            i += 1
            response = await client.post(
                "/api/publish", json={"channel": f"bench:rate{(n * 7 + i) % 100}", "data": {"n": i}}
            )
            if response.status_code == 200:
                ok += 1
            else:
                errors += 1

    clients = [
        httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(max_connections=publishers))
        for url in urls
    ]
    meter = CpuMeter(meter_pids)
    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker(clients[n % len(clients)], n) for n in range(publishers)))
    finally:
        for client in clients:
            await client.aclose()
    elapsed = time.perf_counter() - started
    return {
        "nodes": len(urls),
        "publishers": publishers,
        "seconds": round(elapsed, 3),
        "publications": ok,
        "errors": errors,
        "publications_per_s": round(ok / elapsed),
        "cpu_seconds": meter.stop(),
    }


async def main() -> tuple[dict[str, Any], str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subs", type=int, default=500)
    parser.add_argument("--msgs", type=int, default=500)
    parser.add_argument("--publish-seconds", type=float, default=5.0)
    parser.add_argument("--publishers", type=int, default=16)
    parser.add_argument("--json", default=str(ROOT / "benchmarks/results/redis_broker.json"))
    args = parser.parse_args()
    results: dict[str, Any] = {
        "benchmark": "redis_broker (issue 6)",
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "websockets": websockets.__version__,
        "pinned": False,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_before": list(os.getloadavg()),
        "fanout": {},
        "publish": {},
    }

    def show(name: str, value: dict[str, Any]) -> None:
        print(f"{name}: {json.dumps(value)}", flush=True)

    with nodes("memory", 1) as started:
        (one,) = started
        results["fanout"]["memory-1-node"] = r = await fanout(
            [one.ws_url], one.url, args.subs, args.msgs, pids(None, started)
        )
        show("fan-out, memory broker, 1 node", r)
        results["publish"]["memory-1-node"] = r = await publish_rate(
            [one.url], args.publishers, args.publish_seconds, pids(None, started)
        )
        show("publish, memory broker, 1 node (reference)", r)
    with RedisServer() as redis_server, nodes(redis_server.url, 2) as started:
        one, two = started
        both = pids(redis_server, started)
        results["fanout"]["redis-1-node"] = r = await fanout(
            [one.ws_url], one.url, args.subs, args.msgs, both
        )
        show("fan-out, redis broker, 1 node", r)
        results["fanout"]["redis-2-nodes"] = r = await fanout(
            [one.ws_url, two.ws_url], one.url, args.subs, args.msgs, both
        )
        show("fan-out, redis broker, 2 nodes", r)
        results["publish"]["redis-1-node"] = r = await publish_rate(
            [one.url], args.publishers, args.publish_seconds, both
        )
        show("publish, redis broker, 1 node", r)
        results["publish"]["redis-2-nodes"] = r = await publish_rate(
            [one.url, two.url], args.publishers, args.publish_seconds, both
        )
        show("publish, redis broker, 2 nodes", r)
    results["load_average_after"] = list(os.getloadavg())
    return results, args.json


if __name__ == "__main__":
    found, path = asyncio.run(main())
    Path(path).write_text(json.dumps(found, indent=2) + "\n")
    print(f"wrote {path}")
