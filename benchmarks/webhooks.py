"""Webhook delivery benchmark.

    PYTHONPATH=src python benchmarks/webhooks.py [--publications 10000] [--endpoints 10]
                                                 [--outage 30] [--json out.json]

A Node with the webhook service (SQLite queue in a temporary directory) publishes
``--publications`` publications on channels every one of ``--endpoints`` endpoints matches; a
receiver in a separate process (a minimal keep-alive HTTP/1.1 server on loopback, 10 ports, one
per endpoint) answers 200 and records each webhook-id's first arrival. Reported:

- publish rate (each publish returns only once its deliveries are durable),
- deliveries/s (all deliveries / time from the first publish to the last first-arrival),
- publish → first attempt latency p50/p99 (receiver clock minus the publication's ``time``),
  under the full burst (mostly queueing) and paced at ``--latency-rate`` publications/s,
- queue drain time after an outage: the receiver answers 503 for ``--outage`` seconds while
  publications keep coming (100/s); then it recovers, and we time how long until every
  publication has been taken by every endpoint. The retry schedule used is printed; the default
  production schedule would make this wait for its 5-minute step, so the benchmark uses a
  compressed one (``--schedule``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RECEIVER = r"""
import asyncio, json, sys, time
state = {"fail": False}
first = {}
latencies = []
taken = set()
count = [0]

async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            wid = ""
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"webhook-id":
                    wid = value.strip().decode()
            body = await reader.readexactly(length)
            count[0] += 1
            now = time.time()
            key = (writer.get_extra_info("sockname")[1], wid)
            if key not in first:
                first[key] = now
                latencies.append(now * 1000 - json.loads(body)["time"])
            if state["fail"]:
                writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
            else:
                taken.add(key)
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()

async def control():
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        if line == "fail":
            state["fail"] = True
        elif line == "ok":
            state["fail"] = False
        elif line == "reset":
            first.clear(); latencies.clear(); taken.clear(); count[0] = 0
        answer = {"taken": len(taken), "requests": count[0],
                  "last_first": max(first.values(), default=0.0),
                  "latencies": latencies if line == "latencies" else None}
        sys.stdout.write(json.dumps(answer) + "\n"); sys.stdout.flush()

async def main():
    servers = [await asyncio.start_server(handle, "127.0.0.1", 0) for _ in range(int(sys.argv[1]))]
    ports = [s.sockets[0].getsockname()[1] for s in servers]
    sys.stdout.write(json.dumps(ports) + "\n"); sys.stdout.flush()
    await control()

try:
    import uvloop; uvloop.install()
except ImportError:
    pass
asyncio.run(main())
"""


class Receiver:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()
        answer: dict[str, Any] = json.loads(await self.process.stdout.readline())
        return answer

    async def wait_taken(self, total: int, limit: float) -> dict[str, Any]:
        deadline = time.monotonic() + limit
        while True:
            stats = await self.ask("stats")
            if stats["taken"] >= total:
                return stats
            if time.monotonic() > deadline:
                raise SystemExit(f"only {stats['taken']} of {total} taken after {limit} s")
            await asyncio.sleep(0.05)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from tidings.node import Node
    from tidings.settings import Settings
    from tidings.webhooks.service import WebhookService

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        RECEIVER,
        str(args.endpoints),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        limit=2**27,
    )
    receiver = Receiver(process)
    assert process.stdout is not None
    ports = json.loads(await process.stdout.readline())
    schedule = [float(x) for x in args.schedule.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            webhooks={
                "allow_private": ["127.0.0.0/8"],
                "store": str(Path(tmp) / "bench.db"),
                "retry_schedule": schedule,
                "throttle_floor": 0.0,
                "concurrency_per_endpoint": args.concurrency,
            },
            namespaces={"default": {"history_size": 10}},
        )
        node = Node(settings)
        await node.start()
        service = WebhookService(node)
        await service.start()
        try:
            for port in ports:
                await service.create(f"http://127.0.0.1:{port}/hook", ["bench:*"])
            n, e = args.publications, args.endpoints
            started = time.monotonic()
            wall = time.time()
            sem = asyncio.Semaphore(args.publishers)

            async def publish(i: int) -> None:
                async with sem:
                    await node.publish(f"bench:{i % 100}", {"i": i, "pad": "x" * 100})

            await asyncio.gather(*(publish(i) for i in range(n)))
            publish_s = time.monotonic() - started
            stats = await receiver.wait_taken(n * e, 600)
            delivered_s = stats["last_first"] - wall
            lat = (await receiver.ask("latencies"))["latencies"]
            result: dict[str, Any] = {
                "publications": n,
                "endpoints": e,
                "deliveries": n * e,
                "publish_per_s": round(n / publish_s),
                "deliveries_per_s": round(n * e / delivered_s),
                "first_attempt_p50_ms": round(percentile(lat, 0.50), 1),
                "first_attempt_p99_ms": round(percentile(lat, 0.99), 1),
                "requests": stats["requests"],
            }
            if args.latency_seconds > 0:
                # publish → first attempt when the dispatcher is not saturated
                await receiver.ask("reset")
                count = 0
                end = time.monotonic() + args.latency_seconds
                while time.monotonic() < end:
                    await node.publish(f"bench:{count % 100}", {"i": count})
                    count += 1
                    await asyncio.sleep(1 / args.latency_rate)
                await receiver.wait_taken(count * e, 600)
                lat = (await receiver.ask("latencies"))["latencies"]
                result.update(
                    {
                        "paced_publish_per_s": args.latency_rate,
                        "paced_first_attempt_p50_ms": round(percentile(lat, 0.50), 1),
                        "paced_first_attempt_p99_ms": round(percentile(lat, 0.99), 1),
                    }
                )
            if args.outage > 0:
                await receiver.ask("reset")
                await receiver.ask("fail")
                outage_end = time.monotonic() + args.outage
                count = 0
                while time.monotonic() < outage_end:
                    await node.publish(f"bench:{count % 100}", {"i": count})
                    count += 1
                    await asyncio.sleep(1 / args.outage_rate)
                await receiver.ask("ok")
                recovered = time.monotonic()
                await receiver.wait_taken(count * e, 600)
                result.update(
                    {
                        "outage_s": args.outage,
                        "outage_publications": count,
                        "drain_s": round(time.monotonic() - recovered, 2),
                        "schedule": schedule,
                    }
                )
            return result
        finally:
            await service.stop()
            await node.stop()
            assert process.stdin is not None
            process.stdin.close()
            await process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--publications", type=int, default=10_000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--publishers", type=int, default=50, help="concurrent publishers")
    parser.add_argument("--concurrency", type=int, default=4, help="per endpoint")
    parser.add_argument("--outage", type=float, default=30.0)
    parser.add_argument("--outage-rate", type=float, default=100.0, help="publications/s")
    parser.add_argument("--schedule", default="1,2,4,8,15,30,60")
    parser.add_argument(
        "--latency-rate", type=float, default=20.0, help="publications/s of the paced latency phase"
    )
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
