"""Soak: a steady mixed load for a chosen time, watching the node for growth.

    python benchmarks/soak.py --duration 600            # the default: 10 minutes
    python benchmarks/soak.py --duration 60 --json out.json --markdown out.md

A node runs in a subprocess (this file, ``serve`` mode, which also samples its own asyncio task
count). The load, in this process: ``--clients`` subscribers spread over every transport the node
serves, ``--churn`` of them leaving and coming back with their cursor every sample period, and
``--rate`` publications per second over ``--channels`` channels through the server API.

Every ``--sample`` seconds it records the node's RSS, open file descriptors, asyncio tasks and
connections, and the delivery latency (publication ``time`` to receipt) of that period. At the end
it compares the first third of the run (after a warm-up) with the last third and fails (exit 1)
when RSS, descriptors or tasks grew beyond the bounds, or when any subscriber missed a publication
(every one is checked: exactly once, in order, no gap). Durations are capped at one hour.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
MAX_DURATION = 3600.0
TRANSPORTS = ("ws", "sse", "stream", "longpoll", "poll")
SOAK_SETTINGS = {
    "namespaces": {"soak": {"history_size": 200, "join_leave": False, "presence": False}},
    "limits": {"max_connections_per_ip": 100000, "max_connections_per_user": 100000},
}


@dataclass
class Bounds:
    rss_mb: float = 25.0
    fds: int = 25
    tasks: int = 60


@dataclass
class Sample:
    t: float
    rss_mb: float
    fds: int
    tasks: int
    connections: int
    published: int
    delivered: int
    p50_ms: float | None
    p99_ms: float | None


@dataclass
class Report:
    duration: float
    clients: int
    transports: list[str]
    rate: float
    samples: list[Sample] = field(default_factory=list)
    growth: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    reconnects: int = 0
    published: int = 0
    delivered: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


# the node ---------------------------------------------------------------------------------------


def serve(port: int, stats: Path) -> None:
    """``serve`` mode: a node as ``tidings serve`` runs it, writing its task count each second."""
    import uvicorn
    import uvloop

    from tidings.server.run import uvicorn_config
    from tidings.settings import load_settings

    settings = load_settings(port=port, log_level="warning")
    server = uvicorn.Server(uvicorn_config(settings))

    async def sampler() -> None:
        while True:
            stats.write_text(json.dumps({"tasks": len(asyncio.all_tasks())}))  # noqa: ASYNC240
            await asyncio.sleep(1)

    async def main() -> None:
        task = asyncio.get_running_loop().create_task(sampler())
        try:
            await server.serve()
        finally:
            task.cancel()

    uvloop.run(main())


class Node:
    def __init__(self, workdir: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.stats = workdir / "soak-stats.json"
        self.log = workdir / "soak-node.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
        env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
        for key, value in SOAK_SETTINGS.items():
            env[f"TIDINGS_{key.upper()}"] = json.dumps(value)
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "serve", "--port", str(self.port), "--stats", str(self.stats)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.url = f"http://127.0.0.1:{self.port}"

    async def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as http:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"node exited: {self.log.read_text()[-2000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"{self.url}/healthz", timeout=1)).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError("node did not start")
                await asyncio.sleep(0.05)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def tasks(self) -> int:
        with contextlib.suppress(OSError, ValueError):
            return int(json.loads(self.stats.read_text())["tasks"])
        return -1

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# the load ---------------------------------------------------------------------------------------


class Subscriber:
    """One subscriber that comes and goes, resuming from its own position each time."""

    def __init__(self, url: str, channel: str, transport: str, since: Any, latencies: list[float]) -> None:
        self.url, self.channel, self.transport = url, channel, transport
        self.position = since
        self.latencies = latencies
        self.received = 0
        self.problems: list[str] = []
        self.task: asyncio.Task[None] | None = None
        self.client: Any = None

    def start(self) -> None:
        import tidings

        self.client = tidings.Client(
            self.url, transport=self.transport, backoff=(0.05, 1.0), poll_interval=0.25, long_poll_timeout=5.0
        )
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        import tidings

        async for item in self.client.subscribe(self.channel, since=self.position):
            if isinstance(item, tidings.Gap):
                self.problems.append(f"{self.transport}:{self.channel}: gap {item.to_dict()}")
                continue
            expected = self.position.offset + 1
            if item.epoch != self.position.epoch or item.offset != expected:
                self.problems.append(
                    f"{self.transport}:{self.channel}: got {item.offset}, expected {expected}"
                )
            self.position = item.position
            self.received += 1
            self.latencies.append(time.time() * 1000 - item.time)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        if self.client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.client.close(), 10)


async def served_transports(url: str) -> list[str]:
    served = ["ws"]
    paths = {"sse": "/sse", "stream": "/stream", "longpoll": "/poll", "poll": "/poll"}
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        for transport in TRANSPORTS[1:]:
            params = {"channel": "probe", "timeout": "0"}
            async with http.stream("GET", paths[transport], params=params) as response:
                if response.status_code != 404:
                    served.append(transport)
    return served


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


async def run(
    duration: float = 600.0,
    *,
    clients: int = 60,
    channels: int = 6,
    rate: float = 50.0,
    churn: float = 0.1,
    sample: float = 5.0,
    warmup: float = 10.0,
    bounds: Bounds | None = None,
    workdir: Path | None = None,
    progress: bool = False,
) -> Report:
    """Run the soak and return its report (``report.ok`` says whether it held)."""
    import random

    from tidings.core.position import Position

    duration = min(max(duration, 3 * sample), MAX_DURATION)
    bounds = bounds or Bounds()
    workdir = workdir or Path(os.environ.get("TMPDIR", "/tmp"))
    node = Node(workdir)
    rng = random.Random(11)
    subscribers: list[Subscriber] = []
    latencies: list[float] = []
    report = Report(duration, clients, [], rate)
    try:
        await node.wait_ready()
        report.transports = await served_transports(node.url)
        names = [f"soak:s{i}" for i in range(channels)]
        async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
            starts = {}
            for name in names:
                body = (await http.post("/api/publish", json={"channel": name, "data": 0})).json()
                starts[name] = Position(body["epoch"], body["offset"])
            for i in range(clients):
                name = names[i % channels]
                sub = Subscriber(
                    node.url, name, report.transports[i % len(report.transports)], starts[name], latencies
                )
                sub.start()
                subscribers.append(sub)
            loop = asyncio.get_running_loop()
            begin = loop.time()
            next_sample = begin + sample
            published = 0
            last = {name: starts[name].offset for name in names}
            while (now := loop.time()) < begin + duration:
                due = int((now - begin) * rate)
                while published < due:
                    name = names[published % channels]
                    response = await http.post(
                        "/api/publish", json={"channel": name, "data": {"n": published}}
                    )
                    if response.status_code != 200:
                        report.problems.append(f"publish answered {response.status_code}")
                    else:
                        last[name] = response.json()["offset"]
                    published += 1
                if now >= next_sample:
                    next_sample += sample
                    info = (await http.get("/api/info")).json()
                    window, latencies[:] = list(latencies), []
                    report.samples.append(
                        Sample(
                            round(now - begin, 1),
                            round(node.rss_mb(), 2),
                            node.fds(),
                            node.tasks(),
                            sum(info["connections"].values()),
                            published,
                            sum(s.received for s in subscribers),
                            percentile(window, 0.5),
                            percentile(window, 0.99),
                        )
                    )
                    if progress:
                        print(json.dumps(asdict(report.samples[-1])), flush=True)
                    for sub in rng.sample(subscribers, int(len(subscribers) * churn)):
                        await sub.stop()  # leave, and come back from the same position
                        sub.start()
                        report.reconnects += 1
                await asyncio.sleep(min(0.02, max(0.0, begin + (published + 1) / rate - now)))
            report.published = published
            deadline = loop.time() + 30
            while loop.time() < deadline and any(  # noqa: ASYNC110 (a deadline-bounded poll)
                s.position.offset < last[s.channel] for s in subscribers
            ):
                await asyncio.sleep(0.1)
            for sub in subscribers:
                if sub.position.offset < last[sub.channel]:
                    report.problems.append(
                        f"{sub.transport}:{sub.channel} stopped at "
                        f"{sub.position.offset} of {last[sub.channel]}"
                    )
    finally:
        for i in range(0, len(subscribers), 50):
            await asyncio.gather(*(s.stop() for s in subscribers[i : i + 50]))
        node.stop()
    report.delivered = sum(s.received for s in subscribers)
    for sub in subscribers:
        report.problems.extend(sub.problems[:3])
    analyse(report, warmup, bounds)
    return report


def analyse(report: Report, warmup: float, bounds: Bounds) -> None:
    """Compare the first and last thirds (after the warm-up) against the bounds."""
    steady = [s for s in report.samples if s.t >= warmup] or report.samples
    third = max(1, len(steady) // 3)
    first, last = steady[:third], steady[-third:]

    def growth(attr: str) -> float:
        return round(
            statistics.median(getattr(s, attr) for s in last)
            - statistics.median(getattr(s, attr) for s in first),
            2,
        )

    report.growth = {"rss_mb": growth("rss_mb"), "fds": growth("fds"), "tasks": growth("tasks")}
    if report.growth["rss_mb"] > bounds.rss_mb:
        report.problems.append(f"RSS grew {report.growth['rss_mb']} MB (bound {bounds.rss_mb})")
    if report.growth["fds"] > bounds.fds:
        report.problems.append(f"open fds grew {report.growth['fds']} (bound {bounds.fds})")
    if report.growth["tasks"] > bounds.tasks:
        report.problems.append(f"tasks grew {report.growth['tasks']} (bound {bounds.tasks})")


def markdown(report: Report) -> str:
    lines = [
        "# Soak",
        "",
        f"{report.duration:g} s, {report.clients} subscribers over {', '.join(report.transports)}, "
        f"{report.rate:g} publications/s; {report.published} published, {report.delivered} "
        f"delivered, {report.reconnects} leave-and-resume cycles.",
        "",
        "| t (s) | RSS (MB) | fds | tasks | connections | published | delivered | p50 (ms) | p99 (ms) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in report.samples:
        lines.append(
            f"| {s.t} | {s.rss_mb} | {s.fds} | {s.tasks} | {s.connections} | {s.published} "
            f"| {s.delivered} | {s.p50_ms} | {s.p99_ms} |"
        )
    lines += [
        "",
        f"Growth, first third to last third after warm-up: {report.growth}.",
        "",
        "Result: " + ("OK" if report.ok else "FAILED: " + "; ".join(report.problems[:10])),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        parser = argparse.ArgumentParser()
        parser.add_argument("mode")
        parser.add_argument("--port", type=int, required=True)
        parser.add_argument("--stats", type=Path, required=True)
        args = parser.parse_args()
        serve(args.port, args.stats)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (max 3600)")
    parser.add_argument("--clients", type=int, default=60)
    parser.add_argument("--channels", type=int, default=6)
    parser.add_argument("--rate", type=float, default=50.0, help="publications per second")
    parser.add_argument("--churn", type=float, default=0.1, help="share of clients cycled per sample")
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--max-rss-growth-mb", type=float, default=Bounds.rss_mb)
    parser.add_argument("--max-fd-growth", type=int, default=Bounds.fds)
    parser.add_argument("--max-task-growth", type=int, default=Bounds.tasks)
    parser.add_argument("--json", type=Path, help="write the report as JSON here")
    parser.add_argument("--markdown", type=Path, help="write the report as Markdown here")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    report = asyncio.run(
        run(
            args.duration,
            clients=args.clients,
            channels=args.channels,
            rate=args.rate,
            churn=args.churn,
            sample=args.sample,
            warmup=args.warmup,
            progress=True,
            bounds=Bounds(args.max_rss_growth_mb, args.max_fd_growth, args.max_task_growth),
        )
    )
    if args.json:
        args.json.write_text(json.dumps({**asdict(report), "ok": report.ok}, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown(report))
    print(markdown(report))
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
