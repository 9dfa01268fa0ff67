"""Publish API benchmark (issue 10): requests/s of ``POST /api/publish``, and the latency from a
publish to its first delivery. One command (about a minute)::

    PYTHONPATH=src .venv/bin/python benchmarks/publish_api.py [--conns 1,4,16] [--seconds 4]
        [--repeat 3] [--rate 100] [--latency-seconds 6] [--json benchmarks/results/publish-api.json]

(or ``python benchmarks/run.py publish-api``, which also writes the table and charts into
docs/topics/performance.md). It starts ``tidings serve`` (the default engine, the same settings as
``http_transports.py``) on a free loopback port pinned to CPU 0, the load generator (this process,
raw HTTP/1.1 on asyncio streams) on CPU 1, and measures:

1. **Throughput**: for each N in ``--conns``, N keep-alive connections each sending the next
   publish as soon as the previous one is answered, for ``--seconds``, with no subscriber (the API
   path itself: parsing, validation, history, broker). requests/s, request latency p50/p99 (sent →
   answer read), the server's CPU per request from ``/proc``. ``--repeat`` runs per N, interleaved.
2. **Publish → first delivery**: one WebSocket subscriber and one SSE subscriber on the channel,
   one publisher connection paced at ``--rate`` publishes/s for ``--latency-seconds``; for every
   publication, the time from just before its request is written to its arrival at each
   subscriber (same process, same monotonic clock), and the request's own latency.

Everything is on 127.0.0.1 and bounded by deadlines; the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

# the server, its settings and the raw HTTP helpers are http_transports.py's
from http_transports import (
    CHANNEL,
    ROOT,
    Publisher,
    client_cpu,
    free_port,
    get,
    read_head,
    server_cpu,
    start_server,
)
from websockets.asyncio.client import connect

DEADLINE = 30.0  # any single wait


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency_summary(values_ms: list[float], expected: int) -> dict[str, Any]:
    return {
        "samples": len(values_ms),
        "lost": expected - len(values_ms),
        **{
            f"p{int(q * 100)}_ms": round(v, 2) if (v := percentile(values_ms, q)) is not None else None
            for q in (0.5, 0.9, 0.99)
        },
        "max_ms": round(max(values_ms), 2) if values_ms else None,
    }


# 1. throughput ------------------------------------------------------------------------------------


async def throughput(port: int, pid: int, conns: int, seconds: float, first: int) -> dict[str, Any]:
    publisher = Publisher(port)
    opened = [await asyncio.open_connection("127.0.0.1", port) for _ in range(conns)]
    latencies: list[float] = []
    errors = [0]
    counter = [first]
    stop = [0.0]

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while time.perf_counter() < stop[0]:
            counter[0] += 1
            sent = time.perf_counter()
            writer.write(publisher.request(counter[0]))
            status, headers, _ = await read_head(reader)
            await reader.readexactly(int(headers.get(b"content-length", b"0")))
            latencies.append((time.perf_counter() - sent) * 1000)
            if status != 200:
                errors[0] += 1

    # a short warm-up on the same connections, then the measured window
    stop[0] = time.perf_counter() + 0.3
    await asyncio.wait_for(asyncio.gather(*(worker(r, w) for r, w in opened)), DEADLINE)
    latencies.clear()
    errors[0] = 0
    cpu0, own0, t0 = server_cpu(pid), client_cpu(), time.perf_counter()
    stop[0] = t0 + seconds
    await asyncio.wait_for(asyncio.gather(*(worker(r, w) for r, w in opened)), seconds + DEADLINE)
    elapsed = time.perf_counter() - t0
    cpu, own = server_cpu(pid) - cpu0, client_cpu() - own0
    for _, writer in opened:
        writer.close()
    n = len(latencies)
    return {
        "conns": conns,
        "requests": n,
        "errors": errors[0],
        "seconds": round(elapsed, 3),
        "requests_per_s": round(n / elapsed),
        **{k: v for k, v in latency_summary(latencies, n).items() if k.endswith("_ms")},
        "server_cpu_us_per_request": round(cpu / max(n, 1) * 1e6, 1),
        "server_util": round(cpu / elapsed, 3),
        "client_util": round(own / elapsed, 3),
    }


# 2. publish -> first delivery -----------------------------------------------------------------


def seq_of(publication: bytes) -> int | None:
    try:
        data = orjson.loads(publication).get("data")
    except orjson.JSONDecodeError:
        return None
    return data.get("n") if isinstance(data, dict) else None


async def ws_subscriber(port: int, arrived: dict[int, float], ready: asyncio.Event) -> None:
    async with connect(f"ws://127.0.0.1:{port}/ws", open_timeout=DEADLINE) as ws:
        await ws.send(orjson.dumps({"op": "subscribe", "channel": CHANNEL, "ref": 1}).decode())
        async for frame in ws:
            now = time.perf_counter()
            raw = frame if isinstance(frame, bytes) else frame.encode()
            if not ready.is_set():
                if orjson.loads(raw).get("op") == "subscribed":
                    ready.set()
                continue
            if (n := seq_of(raw)) is not None:
                arrived.setdefault(n, now)


async def sse_subscriber(port: int, arrived: dict[int, float], ready: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(get(f"/sse?channel={CHANNEL}"))
        status, _, _ = await read_head(reader)
        if status != 200:
            raise RuntimeError(f"/sse answered {status}")
        while line := await reader.readline():  # chunked framing lines never start with data:
            now = time.perf_counter()
            if line.startswith(b"event: ready"):
                ready.set()
            elif line.startswith(b"data: ") and (n := seq_of(line[6:])) is not None:
                arrived.setdefault(n, now)
    finally:
        writer.close()


async def first_delivery(port: int, rate: float, seconds: float, first: int) -> dict[str, Any]:
    arrivals: dict[str, dict[int, float]] = {"WebSocket": {}, "SSE": {}}
    readies = {name: asyncio.Event() for name in arrivals}
    tasks = [
        asyncio.ensure_future(ws_subscriber(port, arrivals["WebSocket"], readies["WebSocket"])),
        asyncio.ensure_future(sse_subscriber(port, arrivals["SSE"], readies["SSE"])),
    ]
    try:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in readies.values())), DEADLINE)
        publisher = Publisher(port)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sent: dict[int, float] = {}
        answered: list[float] = []
        count = int(rate * seconds)
        start = time.perf_counter() + 0.1
        for k in range(count):
            delay = start + k / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            n = first + k
            sent[n] = time.perf_counter()
            writer.write(publisher.request(n))
            _, headers, _ = await asyncio.wait_for(read_head(reader), DEADLINE)
            await reader.readexactly(int(headers.get(b"content-length", b"0")))
            answered.append((time.perf_counter() - sent[n]) * 1000)
        writer.close()
        for _ in range(100):  # up to 5 s for the last deliveries
            if all(len(a) >= count for a in arrivals.values()):
                break
            await asyncio.sleep(0.05)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    paths = {"publish request (sent → answered)": latency_summary(answered, count)}
    for name, got in arrivals.items():
        lat = [(got[n] - t) * 1000 for n, t in sent.items() if n in got]
        paths[f"{name} subscriber (sent → first delivery)"] = latency_summary(lat, count)
    return {"rate": rate, "seconds": seconds, "publications": count, "paths": paths}


# the run ---------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    import importlib.metadata as metadata

    import tidings

    found = {"tidings": tidings.__version__}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        found["commit"] = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    for dist in ("uvicorn", "uvloop", "websockets", "orjson"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[dist] = metadata.version(dist)
    return found


async def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    port = free_port()
    proc = start_server(port)
    runs: list[dict[str, Any]] = []
    first = 1
    total = args.repeat * len(args.conns)
    try:
        for rep in range(1, args.repeat + 1):
            for conns in args.conns:
                print(
                    f"[{len(runs) + 1}/{total}] {conns} connection(s), run {rep}/{args.repeat} …",
                    end=" ",
                    flush=True,
                )
                r = await throughput(port, proc.pid, conns, args.seconds, first)
                first += r["requests"] + 100_000
                runs.append({"rep": rep, **r})
                print(
                    f"{r['requests_per_s']:,} requests/s, p50 {r['p50_ms']} ms, "
                    f"p99 {r['p99_ms']} ms, {r['server_cpu_us_per_request']} µs CPU/request"
                    + (f", {r['errors']} errors" if r["errors"] else ""),
                    flush=True,
                )
        print(
            f"publish -> first delivery, {args.rate:g}/s for {args.latency_seconds:g} s …",
            end=" ",
            flush=True,
        )
        latency = await first_delivery(port, args.rate, args.latency_seconds, first + 10_000_000)
        print(
            "; ".join(
                f"{k.split(' (')[0]} p50 {v['p50_ms']} / p99 {v['p99_ms']} ms"
                for k, v in latency["paths"].items()
            ),
            flush=True,
        )
    finally:
        proc.terminate()
        proc.wait(15)
    return {
        "benchmark": "publish-api",
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "started": started,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {
            "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(),
        },
        "pinned": {"server": [0], "loadgen": [1]} if (os.cpu_count() or 1) >= 2 else None,
        "load_average_before": [round(x, 2) for x in args.load],
        "versions": versions(),
        "command": " ".join(["benchmarks/publish_api.py", *sys.argv[1:]]),
        "seconds_per_run": args.seconds,
        "repeat": args.repeat,
        "throughput": runs,
        "latency": latency,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--conns",
        type=lambda s: [int(c) for c in s.split(",")],
        default=[1, 4, 16],
        help="keep-alive publisher connections, one throughput run each",
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="length of a throughput run")
    parser.add_argument("--repeat", type=int, default=3, help="throughput runs per N")
    parser.add_argument("--rate", type=float, default=100.0, help="paced publishes/s (latency)")
    parser.add_argument("--latency-seconds", type=float, default=6.0)
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/publish-api.json")
    args = parser.parse_args()
    args.load = os.getloadavg()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {1})
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
