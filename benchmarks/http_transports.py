"""Benchmark of the HTTP push transports: fan-out over SSE, NDJSON streaming and long polling,
and the request rate of short polling. One command::

    PYTHONPATH=src python benchmarks/http_transports.py            # 1,000 x 1,000, writes docs

It starts ``tidings serve`` as a subprocess on a free loopback port (pinned to CPU 0 when the
machine has two or more, the load generator to CPU 1), drives it with raw asyncio streams (no HTTP
library per request), and measures the server's CPU from ``/proc``. Fan-out: ``--subscribers``
clients on one channel, then ``--messages`` publications of ~100 bytes through ``POST
/api/publish`` on keep-alive connections; it stops when every subscriber has every message (or at
a deadline). Short polling: ``--pollers`` keep-alive clients for ``--seconds``, first with nothing
new (``If-None-Match`` -> 304), then with one new message per request. Results go to
``docs/topics/performance-http.md`` (``--out``) and, as JSON, to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
MARKER = b',"event":"message",'  # once in every delivered publication, on every transport
CHANNEL = "bench:fanout"
TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    transport: str
    subscribers: int
    messages: int
    delivered: int = 0
    seconds: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    bytes_down: int = 0
    bytes_up: int = 0
    requests: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def per_delivery_us(self) -> float:
        return self.server_cpu / max(1, self.delivered) * 1e6


# the server ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src"),
        "TIDINGS_LOG_LEVEL": "warning",
        "TIDINGS_NAMESPACES": json.dumps({"bench": {"history_size": 5000, "presence": False}}),
        # every client is on loopback: the per-address limit counts HTTP streams and polls too
        "TIDINGS_LIMITS": json.dumps(
            {"outbox_bytes": 64 * 1024 * 1024, "outbox_messages": 100000, "max_connections_per_ip": 100000}
        ),
    }
    proc = subprocess.Popen([sys.executable, "-m", "tidings", "serve", "--port", str(port)], env=env)
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(proc.pid, {0})
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the server did not start")


def client_cpu() -> float:
    """User + system CPU seconds of this load generator so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def server_cpu(pid: int) -> float:
    """User + system CPU seconds of the server process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


# raw HTTP/1.1 -------------------------------------------------------------------------------------


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], int]:
    """Status, headers and the head's size in bytes."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if b":" in line:
            name, value = line.split(b":", 1)
            headers[name.strip().lower()] = value.strip()
    return status, headers, len(head)


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()


class Publisher:
    """Publishes through the server API on keep-alive connections, each one at a time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.payload = "x" * 70  # ~100 bytes of data with the JSON around it

    def request(self, n: int) -> bytes:
        body = orjson.dumps({"channel": CHANNEL, "data": {"n": n, "pad": self.payload}})
        return (
            b"POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        ) + body

    async def run(self, first: int, count: int, connections: int = 4) -> None:
        async def one(numbers: range) -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            for n in numbers:
                writer.write(self.request(n))
                _, headers, _ = await read_head(reader)
                await reader.readexactly(int(headers[b"content-length"]))
            writer.close()

        await asyncio.gather(*(one(range(first + i, first + count, connections)) for i in range(connections)))


# fan-out ------------------------------------------------------------------------------------------


class Counter:
    def __init__(self, subscribers: int, messages: int) -> None:
        self.expected = subscribers * messages
        self.delivered = 0
        self.bytes_down = 0
        self.bytes_up = 0
        self.requests = 0
        self.done = asyncio.Event()

    def add(self, count: int) -> None:
        self.delivered += count
        if self.delivered >= self.expected:
            self.done.set()


class StreamClient(asyncio.Protocol):
    """One SSE or NDJSON subscriber as a bare protocol (a callback per chunk, no reader task):
    counts publications by a marker, chunk edges included."""

    def __init__(
        self, path: str, messages: int, counter: Counter, live: list[int], ready: asyncio.Event
    ) -> None:
        self.request = get(f"{path}?channel={CHANNEL}")
        self.messages = messages
        self.counter = counter
        self.live = live
        self.ready = ready
        self.started = False
        self.seen = 0
        self.tail = b""
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport  # uvloop's transports do not subclass asyncio's
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.started:  # the head and the ready notice come first
            self.started = True
            self.live[0] += 1
            if self.live[0] == self.live[1]:
                self.ready.set()
            return
        self.counter.bytes_down += len(data)
        found = (self.tail + data).count(MARKER)
        self.tail = data[-(len(MARKER) - 1) :]
        self.seen += found
        self.counter.add(found)
        if self.seen >= self.messages:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def stream_subscriber(
    port: int, path: str, messages: int, counter: Counter, ready: asyncio.Event, live: list[int]
) -> None:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: StreamClient(path, messages, counter, live, ready), "127.0.0.1", port
    )
    try:
        await client.closed
    finally:
        client.transport.close()


async def long_poller(port: int, messages: int, counter: Counter, cursor: str) -> None:
    """One long-polling client: re-polls with the cursor of each answer until it has them all."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    seen = 0
    try:
        while seen < messages:
            request = get(f"/poll?channel={CHANNEL}&cursor={cursor}&timeout=20&limit=1000")
            writer.write(request)
            counter.bytes_up += len(request)
            counter.requests += 1
            status, headers, size = await read_head(reader)
            body = await reader.readexactly(int(headers[b"content-length"]))
            counter.bytes_down += size + len(body)
            assert status == 200, body
            answer = orjson.loads(body)
            cursor = answer["cursor"]
            seen += len(answer["messages"])
            counter.add(len(answer["messages"]))
    finally:  # a cancelled client must not leave a poll held on the server
        writer.close()


async def current_cursor(port: int) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get(f"/poll?channel={CHANNEL}&timeout=0"))
    _, headers, _ = await read_head(reader)
    body = await reader.readexactly(int(headers[b"content-length"]))
    writer.close()
    cursor: str = orjson.loads(body)["cursor"]
    return cursor


async def wait_subscribed(port: int, subscribers: int, seconds: float = 60) -> None:
    """Until the server counts ``subscribers`` on the channel (GET /api/channels), bounded."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(get("/api/channels"))
        _, headers, _ = await read_head(reader)
        body = orjson.loads(await reader.readexactly(int(headers[b"content-length"])))
        writer.close()
        counts = {c["name"]: c["subscribers"] for c in body["channels"]}
        if counts.get(CHANNEL, 0) >= subscribers:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"only some of {subscribers} subscribers became live")


async def open_all(coros: list[Any], concurrency: int = 100) -> list[asyncio.Task[None]]:
    """Start the clients, at most ``concurrency`` connection attempts at once."""
    tasks = []
    for start in range(0, len(coros), concurrency):
        batch = [asyncio.ensure_future(c) for c in coros[start : start + concurrency]]
        tasks.extend(batch)
        await asyncio.sleep(0.01)
    return tasks


async def fan_out(
    transport: str, port: int, pid: int, subscribers: int, messages: int, first: int, deadline: float
) -> Result:
    counter = Counter(subscribers, messages)
    ready = asyncio.Event()
    live = [0, subscribers]
    if transport == "longpoll":
        cursor = await current_cursor(port)
        tasks = await open_all([long_poller(port, messages, counter, cursor) for _ in range(subscribers)])
        await wait_subscribed(port, subscribers)
    else:
        path = "/sse" if transport == "sse" else "/stream"
        tasks = await open_all(
            [stream_subscriber(port, path, messages, counter, ready, live) for _ in range(subscribers)]
        )
        await asyncio.wait_for(ready.wait(), 60)
    counter.bytes_down = counter.bytes_up = counter.requests = 0
    cpu0, t0, own0 = server_cpu(pid), time.perf_counter(), client_cpu()
    await Publisher(port).run(first, messages)
    with contextlib.suppress(TimeoutError):  # reported as an incomplete delivery
        await asyncio.wait_for(counter.done.wait(), deadline)
    seconds, cpu = time.perf_counter() - t0, server_cpu(pid) - cpu0
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return Result(
        transport,
        subscribers,
        messages,
        counter.delivered,
        seconds,
        cpu,
        client_cpu() - own0,
        counter.bytes_down,
        counter.bytes_up,
        counter.requests,
    )


# short polling ------------------------------------------------------------------------------------


async def short_poller(port: int, path: str, etag: str, until: float, counter: Counter) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = get(path, f"If-None-Match: {etag}\r\n" if etag else "")
    while time.perf_counter() < until:
        writer.write(request)
        status, headers, size = await read_head(reader)
        length = int(headers.get(b"content-length", b"0"))
        body = await reader.readexactly(length) if length else b""
        counter.requests += 1
        counter.bytes_up += len(request)
        counter.bytes_down += size + len(body)
        counter.delivered += body.count(MARKER)
        assert status in (200, 304), status
    writer.close()


async def short_polling(
    port: int, pid: int, pollers: int, seconds: float, new: int, path: str = ""
) -> Result:
    """Requests/s when each request finds ``new`` (0 or 1) new messages (or of ``path``)."""
    if path:  # a reference: the HTTP stack's own cost per request
        counter = Counter(pollers, 1)
        cpu0, t0 = server_cpu(pid), time.perf_counter()
        await asyncio.gather(*(short_poller(port, path, "", t0 + seconds, counter) for _ in range(pollers)))
        return _poll_result(
            f"reference: GET {path}", pollers, 0, counter, time.perf_counter() - t0, server_cpu(pid) - cpu0
        )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(get(f"/poll?channel={CHANNEL}&timeout=0"))
    _, headers, _ = await read_head(reader)
    answer = orjson.loads(await reader.readexactly(int(headers[b"content-length"])))
    writer.close()
    etag = headers[b"etag"].decode()
    path = f"/poll?channel={CHANNEL}&timeout=0"
    if new:  # one behind the latest: every request answers the newest message
        from tidings.core.cursor import decode_cursor, encode_cursor
        from tidings.core.position import Position

        position = decode_cursor(answer["cursor"])[CHANNEL]
        behind = encode_cursor({CHANNEL: Position(position.epoch, position.offset - new)})
        path, etag = f"{path}&cursor={behind}", ""
    counter = Counter(pollers, 1)
    cpu0, t0 = server_cpu(pid), time.perf_counter()
    await asyncio.gather(*(short_poller(port, path, etag, t0 + seconds, counter) for _ in range(pollers)))
    return _poll_result(
        f"short poll, {new} new" + (" (304)" if not new else " (200)"),
        pollers,
        new,
        counter,
        time.perf_counter() - t0,
        server_cpu(pid) - cpu0,
    )


def _poll_result(name: str, pollers: int, new: int, counter: Counter, elapsed: float, cpu: float) -> Result:
    result = Result(
        name,
        pollers,
        new,
        counter.delivered,
        elapsed,
        cpu,
        0.0,
        counter.bytes_down,
        counter.bytes_up,
        counter.requests,
    )
    result.extra["requests_per_s"] = counter.requests / elapsed
    result.extra["cpu_us_per_request"] = cpu / max(1, counter.requests) * 1e6
    return result


# report -------------------------------------------------------------------------------------------


def median_result(runs: list[Result]) -> Result:
    """The run with the median delivery rate (one run's figures stay consistent)."""
    ordered = sorted(runs, key=lambda r: r.delivered / max(r.seconds, 1e-9))
    return ordered[len(ordered) // 2]


def fan_out_row(r: Result) -> str:
    rate = r.delivered / r.seconds
    per_msg = r.delivered / max(1, r.subscribers)
    complete = "yes" if r.delivered >= r.subscribers * r.messages else f"{per_msg:.0f}/msg"
    up = r.bytes_up / max(1, r.delivered)
    req = f"{r.requests / max(1, r.delivered):.3f}" if r.requests else "-"
    return (
        f"| {r.transport} | {r.subscribers:,} x {r.messages:,} | {complete} | {r.seconds:.2f} "
        f"| {rate:,.0f} | {r.per_delivery_us:.1f} | {r.server_cpu:.1f} | {r.client_cpu:.1f} "
        f"| {r.bytes_down / max(1, r.delivered):.0f} | {up:.1f} | {req} |"
    )


def poll_row(r: Result) -> str:
    per = max(1, r.requests)
    return (
        f"| {r.transport} | {r.subscribers} | {r.extra['requests_per_s']:,.0f} "
        f"| {r.extra['cpu_us_per_request']:.0f} | {r.bytes_down / per:.0f} "
        f"| {r.bytes_up / per:.0f} |"
    )


def markdown(fan: list[Result], polls: list[Result], args: argparse.Namespace) -> str:
    lines = [
        "# Performance of the HTTP push transports",
        "",
        f"Measured by `benchmarks/http_transports.py` on {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}; server pinned to CPU 0, load generator "
        f"to CPU 1; median of {args.repeat} run(s). One uvicorn process, in-memory broker. "
        "Figures are from a small, shared machine: compare ratios, not absolutes.",
        "",
        "## Fan-out: one channel, messages of ~100 bytes published through `POST /api/publish`",
        "",
        "Time runs from the first publish to the last delivery. Server CPU covers the publishes "
        "too. Bytes down count everything the subscribers read (events, chunked framing, "
        "heartbeats; for long polling, response heads); bytes up count requests.",
        "",
        "| transport | subscribers x messages | all delivered | seconds | deliveries/s "
        "| server CPU µs/delivery | server CPU s | load generator CPU s | bytes down/delivery "
        "| bytes up/delivery | requests/delivery |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *(fan_out_row(r) for r in fan),
        "",
        "## Short polling (`timeout=0`) on keep-alive connections",
        "",
        "With nothing new each request carries the last `ETag` and gets `304` with an empty "
        "body; with one new message each request's cursor is one behind the latest.",
        "",
        "| case | clients | requests/s | server CPU µs/request | bytes down/request | bytes up/request |",
        "| --- | --- | --- | --- | --- | --- |",
        *(poll_row(r) for r in polls),
        "",
        "## Reading the figures",
        "",
        "- Server CPU per delivery is the figure to compare: wall-clock rates depend on what else "
        f"runs on this shared machine (load average {args.load:.1f} at the start of the run).",
        "- SSE and NDJSON streaming write the same pre-encoded bytes to every single-channel "
        "stream; SSE carries the cursor twice (`id:` and the JSON), hence its extra bytes.",
        "- Long polling pays a whole HTTP request, a subscribe and an unsubscribe per batch: "
        "several times the CPU of a stream per delivery, plus the request bytes going up. Batches "
        "grow with the publish rate (requests/delivery falls), which is what keeps it usable.",
        "- A short poll answered `304` costs little more than the HTTP stack's own cost per "
        "request (the `/healthz` reference line); one answering a message adds encoding it.",
        "",
        f"Command: `PYTHONPATH=src python benchmarks/http_transports.py --subscribers "
        f"{args.subscribers} --messages {args.messages} --pollers {args.pollers} "
        f"--seconds {args.seconds} --repeat {args.repeat}`",
        "",
    ]
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> tuple[list[Result], list[Result]]:
    port = free_port()
    proc = start_server(port)
    fan: list[Result] = []
    polls: list[Result] = []
    try:
        first = 1
        for transport in args.transports.split(","):
            runs = []
            for _ in range(args.repeat):
                runs.append(
                    await fan_out(
                        transport, port, proc.pid, args.subscribers, args.messages, first, args.deadline
                    )
                )
                first += args.messages
            fan.append(median_result(runs))
            print(json.dumps(asdict(fan[-1])), file=sys.stderr)
        baseline = await short_polling(port, proc.pid, args.pollers, args.seconds, 0, path="/healthz")
        polls.append(baseline)
        for new in (0, 1):
            runs = [
                await short_polling(port, proc.pid, args.pollers, args.seconds, new)
                for _ in range(args.repeat)
            ]
            polls.append(sorted(runs, key=lambda r: r.requests)[len(runs) // 2])
            print(json.dumps(asdict(polls[-1])), file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait(15)
    return fan, polls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--transports", default="sse,stream,longpoll")
    parser.add_argument("--pollers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--deadline", type=float, default=120.0, help="Give up on a fan-out run after this many seconds."
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs/topics/performance-http.md")
    parser.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="Only write the report from the JSON a previous run printed.",
    )
    parser.add_argument("--load", type=float, default=os.getloadavg()[0], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.render is not None:
        saved = [Result(**r) for r in json.loads(args.render.read_text())]
        fan = [r for r in saved if not r.transport.startswith(("short", "reference"))]
        args.out.write_text(markdown(fan, [r for r in saved if r not in fan], args))
        return
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {1})
    try:
        import uvloop

        fan, polls = uvloop.run(run(args))
    except ImportError:
        fan, polls = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(fan, polls, args))
    print(json.dumps([asdict(r) for r in fan + polls], indent=1))


if __name__ == "__main__":
    main()
