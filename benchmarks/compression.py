"""Fewer bytes on the wire (issue 19, item 5): WebSocket fan-out of a ~1 KB ticker, compressed
or not, with delta updates or not, tidings and Node ``ws`` with ``perMessageDeflate`` side by
side in one run.

``--subscribers`` WebSocket clients (default 1,000) on one channel, then ``--messages``
publications of the ticker of ``benchmarks/ticker.py`` (~1 KB of JSON, a few fields changed per
message), published back to back on one keep-alive connection. Every client offers
permessage-deflate as the Python ``websockets`` library does by default (its sans-I/O protocol
decodes the frames: what a real client pays), and counts the bytes its socket receives. Per
variant it reports:

- **bytes per delivery on the wire**: what the subscribers' sockets received during the
  publications (frame headers included), over the deliveries; beside it the message's own size
  (uncompressed), the ratio, and the ratio to the same server's plain variant on the same
  transport (``tidings``, ``node-ws``, ``tidings-sse``, ``node-sse``: full messages,
  uncompressed), which is what the targets of issue 19 compare;
- **server CPU per delivery**: the server process's user + system CPU (``/proc``) over the
  window, over the deliveries;
- **deliveries/s**: deliveries over the time from the first publish to the last delivery;
- **latency**: publish (sent) to delivery (parsed by the client), p50 / p99.

Variants (``--variants``; one fresh server each, the server on CPU 0 and the clients on the
others when the machine has several):

- ``tidings``: compression off where the server has the setting (``[websocket] compression =
  false``; before permessage-deflate existed: what it does anyway);
- ``tidings-deflate``: ``[websocket] compression = true``;
- ``tidings-delta``: compression off, namespace ``delta = true``, subscribe with
  ``"delta":"fossil"``;
- ``tidings-deflate-delta``: both;
- ``node-ws-deflate``: Node ``ws`` (``benchmarks/peerbench/servers/node_ws.js``) with
  ``perMessageDeflate`` (threshold 256 bytes, its defaults otherwise: context takeover);
- ``node-ws``: the same without compression;
- ``tidings-sse``, ``tidings-sse-gzip`` (``[sse] compression = true``, the clients ask for
  gzip as browsers do) and ``node-sse`` (the Node server's hand-rolled SSE endpoint): the same
  fan-out over SSE, the clients raw sockets that de-chunk and decode the body as it comes.

A variant whose server does not offer what it needs (a tidings build without the
``websocket.compression`` or namespace ``delta`` setting, Node ``ws`` not installed: ``python
benchmarks/run.py setup``) is reported as ``n/a`` with the reason, so the scenario runs on every
build; whether the server agreed to compress is read from each handshake (``extension``).

::

    PYTHONPATH=src python benchmarks/compression.py                     # 1,000 x 200, all
    PYTHONPATH=src python benchmarks/compression.py --subscribers 50 --messages 20 --no-docs

Results: one JSON line per variant in ``benchmarks/results/compression-<date>.jsonl``, the table
on stdout and (unless ``--no-docs``) in ``docs/topics/performance.md`` between its
``<!-- bench:compression -->`` markers, with a chart (``docs/img/bench-compression.png``) when
matplotlib is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from array import array
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ticker import ticker_messages

ROOT = Path(__file__).resolve().parents[1]
NODE_SERVER = ROOT / "benchmarks" / "peerbench" / "servers" / "node_ws.js"
NODE_PATH = Path(os.environ.get("PEERBENCH_ENV", "/tmp/peerbench-env")) / "node" / "node_modules"
DOC = ROOT / "docs" / "topics" / "performance.md"
CHART = ROOT / "docs" / "img" / "bench-compression.png"
TICK = os.sysconf("SC_CLK_TCK")
CHANNEL = "bench:ticker"
VARIANTS = (
    "tidings",
    "tidings-deflate",
    "tidings-delta",
    "tidings-deflate-delta",
    "node-ws-deflate",
    "node-ws",
    "tidings-sse",
    "tidings-sse-gzip",
    "node-sse",
)
BASELINES = ("tidings", "node-ws", "tidings-sse", "node-sse")


def baseline_of(variant: str) -> str:
    """The plain variant (full messages, uncompressed) of the same server and transport."""
    return next(b for b in sorted(BASELINES, key=len, reverse=True) if variant.startswith(b))


# where a delivery says which publication it is: tidings' envelope, or the ticker's own field
SEQ = {"tidings": re.compile(rb'"offset":(\d+)'), "node": re.compile(rb'"seq":(\d+)')}

TIDINGS_TOML = """\
log_level = "warning"
demo = false

[limits]
max_connections_per_ip = 20000
max_connections_per_user = 20000
outbox_bytes = 67108864

[namespaces.bench]
presence = false
join_leave = false
history_size = 1000
"""


@dataclass
class Result:
    variant: str
    subscribers: int
    messages: int
    status: str = "ok"  # or "n/a: why"
    extension: str = ""  # what the server's handshake agreed to
    deliveries: int = 0
    expected: int = 0
    seconds: float = 0.0
    wire_bytes: int = 0
    message_bytes: int = 0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    deltas: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)

    @property
    def bytes_per_delivery(self) -> float:
        return self.wire_bytes / max(1, self.deliveries)

    @property
    def message_bytes_per_delivery(self) -> float:
        return self.message_bytes / max(1, self.deliveries)

    @property
    def cpu_us_per_delivery(self) -> float:
        return self.server_cpu / max(1, self.deliveries) * 1e6

    @property
    def deliveries_per_s(self) -> float:
        return self.deliveries / self.seconds if self.seconds else 0.0


# servers ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tidings_python() -> str:
    return os.environ.get("TIDINGS_PYTHON", sys.executable)


def tidings_offers() -> dict[str, bool]:
    """Which of the settings the variants need this tidings build has."""
    probe = (
        "import json\n"
        "from tidings.settings import NamespaceSettings, Settings\n"
        "ws = Settings.model_fields.get('websocket')\n"
        "fields = getattr(ws.annotation, 'model_fields', {}) if ws else {}\n"
        "print(json.dumps({'compression': 'compression' in fields,"
        " 'sse_compression': 'compression' in Settings.model_fields['sse'].annotation.model_fields,"
        " 'delta': 'delta' in NamespaceSettings.model_fields}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([tidings_python(), "-c", probe], capture_output=True, text=True, env=env, check=True)
    offers: dict[str, bool] = json.loads(out.stdout)
    return offers


def pin(pid: int, cpus: set[int]) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(pid, cpus)


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the server did not start")


def start_tidings(port: int, variant: str, offers: dict[str, bool], scratch: Path) -> subprocess.Popen[bytes]:
    toml = TIDINGS_TOML
    if offers["compression"]:
        toml += f"\n[websocket]\ncompression = {'true' if 'deflate' in variant else 'false'}\n"
    if "delta" in variant:
        toml = toml.replace("history_size = 1000\n", "history_size = 1000\ndelta = true\n")
    if offers["sse_compression"]:
        toml += f"\n[sse]\ncompression = {'true' if variant.endswith('-gzip') else 'false'}\n"
    config = scratch / f"{variant}.toml"
    config.write_text(toml)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"}
    argv = [tidings_python(), "-m", "tidings", "serve", "--port", str(port), "--config", str(config)]
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)


def start_node(port: int, deflate: bool) -> subprocess.Popen[bytes]:
    argv = ["node", str(NODE_SERVER), str(port)] + (["deflate"] if deflate else [])
    return subprocess.Popen(argv, env={**os.environ, "NODE_PATH": str(NODE_PATH)}, stdout=subprocess.DEVNULL)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


# the subscribers (a worker process each, sans-I/O websockets over asyncio) -----------------------


class Subscriber(asyncio.Protocol):
    """One WebSocket client: the ``websockets`` sans-I/O protocol, offering permessage-deflate
    with the library's defaults; counts the bytes its socket receives."""

    def __init__(self, url: str, subscribe: bytes, on_message: Callable[[bytes], None]) -> None:
        from websockets.client import ClientProtocol
        from websockets.extensions.permessage_deflate import enable_client_permessage_deflate
        from websockets.uri import parse_uri

        self.protocol = ClientProtocol(
            parse_uri(url), extensions=enable_client_permessage_deflate(None), max_size=None
        )
        self.subscribe = subscribe
        self.on_message = on_message
        self.transport: asyncio.Transport | None = None
        self.wire = 0
        self.opened: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.protocol.send_request(self.protocol.connect())
        self._flush()

    def _flush(self) -> None:
        assert self.transport is not None
        for data in self.protocol.data_to_send():
            if data:
                self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        from websockets.frames import Opcode
        from websockets.http11 import Response

        self.wire += len(data)
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                if event.status_code != 101:
                    self.opened.set_exception(RuntimeError(f"handshake answered {event.status_code}"))
                    continue
                self.opened.set_result(event.headers.get("Sec-WebSocket-Extensions", ""))
                if self.subscribe:
                    self.protocol.send_text(self.subscribe)
                else:
                    self.subscribed.set_result(None)
            elif event.opcode is Opcode.TEXT:
                if not self.subscribed.done():
                    if b'"op":"subscribed"' in event.data:
                        self.subscribed.set_result(None)
                    elif b'"op":"error"' in event.data:
                        self.subscribed.set_exception(RuntimeError(event.data.decode()))
                    continue
                self.on_message(event.data)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        for future in (self.opened, self.subscribed):
            if not future.done():
                future.set_exception(ConnectionError("closed"))


class SSESubscriber(asyncio.Protocol):
    """One SSE client over a raw socket: asks for gzip when ``gzip`` (as a browser does),
    de-chunks and decodes the body as it comes, hands each event on; counts socket bytes."""

    def __init__(self, path: str, gzip: bool, on_message: Callable[[bytes], None]) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n"
            + ("Accept-Encoding: gzip\r\n" if gzip else "")
            + "\r\n"
        ).encode()
        self.on_message = on_message
        self.transport: asyncio.Transport | None = None
        self.wire = 0
        self.buffer = b""
        self.head: bytes | None = None
        self.inflater: Any = None
        self.text = b""
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[str] = loop.create_future()
        self.subscribed: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.wire += len(data)
        self.buffer += data
        if self.head is None:
            head, found, rest = self.buffer.partition(b"\r\n\r\n")
            if not found:
                return
            self.head, self.buffer = head, rest
            encoding = re.search(rb"(?im)^content-encoding: *([a-z]+)", head)
            if encoding is not None:
                self.inflater = zlib.decompressobj(31 if encoding.group(1) == b"gzip" else 15)
            self.opened.set_result(f"Content-Encoding: {encoding.group(1).decode()}" if encoding else "")
        while True:  # whole chunks only
            size_end = self.buffer.find(b"\r\n")
            if size_end < 0:
                return
            size = int(self.buffer[:size_end], 16)
            if len(self.buffer) < size_end + 2 + size + 2:
                return
            chunk = self.buffer[size_end + 2 : size_end + 2 + size]
            self.buffer = self.buffer[size_end + 2 + size + 2 :]
            self.text += self.inflater.decompress(chunk) if self.inflater is not None else chunk
            *events, self.text = self.text.split(b"\n\n")
            for event in events:
                if not self.subscribed.done():
                    self.subscribed.set_result(None)  # the ready notice (or Node's comment)
                if event.startswith(b":") or b"event: ready" in event:
                    continue
                self.on_message(event)

    def connection_lost(self, exc: Exception | None) -> None:
        for future in (self.opened, self.subscribed):
            if not future.done():
                future.set_exception(ConnectionError("closed"))


async def subscribers_main(spec: dict[str, Any], pipe: Any) -> None:
    """A worker: open ``spec["count"]`` subscribers, say ready, take ``spec["messages"]`` each,
    then send back what it measured."""
    loop = asyncio.get_running_loop()
    seq_re = SEQ[spec["flavor"]]
    messages = spec["messages"]
    received = [0]
    got: list[array[float]] = []
    message_bytes = [0]
    deltas = [0]
    done = loop.create_future()
    expected = spec["count"] * messages

    def on_message(data: bytes) -> None:
        now = time.monotonic()
        found = seq_re.search(data, 0, 200)
        if found is None:
            return
        seq = int(found.group(1))
        if spec["flavor"] == "tidings" and b'"delta":true' in data:
            deltas[0] += 1
        if 1 <= seq <= messages:
            got[seq - 1].append(now)
            message_bytes[0] += len(data)
            received[0] += 1
            if received[0] == expected and not done.done():
                done.set_result(None)

    got.extend(array("d") for _ in range(messages))
    clients: list[Subscriber | SSESubscriber] = []
    extensions: set[str] = set()
    for _ in range(spec["count"]):
        _, client = await loop.create_connection(
            (
                (lambda: SSESubscriber(spec["sse_path"], spec["gzip"], on_message))
                if spec["transport"] == "sse"
                else (lambda: Subscriber(spec["url"], spec["subscribe"], on_message))
            ),
            "127.0.0.1",
            spec["port"],
        )
        extensions.add(await asyncio.wait_for(client.opened, 30))
        await asyncio.wait_for(client.subscribed, 30)
        clients.append(client)
    wire_before = sum(c.wire for c in clients)
    cpu_before = time.process_time()
    pipe.send(("ready", sorted(extensions)))
    await loop.run_in_executor(None, pipe.recv)  # "go"
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done, spec["deadline"])
    pipe.send(
        (
            "done",
            {
                "received": received[0],
                "wire": sum(c.wire for c in clients) - wire_before,
                "message_bytes": message_bytes[0],
                "deltas": deltas[0],
                "client_cpu": time.process_time() - cpu_before,
                "times": [t.tobytes() for t in got],
            },
        )
    )
    for client in clients:
        if client.transport is not None:
            client.transport.close()


def subscribers_process(spec: dict[str, Any], pipe: Any) -> None:
    pin(0, spec["cpus"])
    asyncio.run(subscribers_main(spec, pipe))


# the publisher ----------------------------------------------------------------------------------


async def publish_all(port: int, flavor: str, bodies: list[bytes]) -> list[float]:
    """Publish every body back to back on one keep-alive connection; when each was sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent: list[float] = []
    path, content_type = (
        ("/api/publish", "application/json")
        if flavor == "tidings"
        else (
            f"/publish?channel={CHANNEL}",
            "text/plain",
        )
    )
    for body in bodies:
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        sent.append(time.monotonic())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"publish answered {head[:40]!r}")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        await reader.readexactly(length)
    writer.close()
    return sent


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return values[min(len(values) - 1, int(q * len(values)))]


def run_variant(variant: str, args: argparse.Namespace, offers: dict[str, bool], scratch: Path) -> Result:
    result = Result(variant, args.subscribers, args.messages)
    node = variant.startswith("node")
    if node and not (NODE_PATH / "ws").is_dir():
        result.status = f"n/a: Node ws not installed in {NODE_PATH} (python benchmarks/run.py setup)"
        return result
    if "deflate" in variant and not node and not offers["compression"]:
        result.status = "n/a: this build has no websocket.compression setting"
        return result
    if variant == "tidings-sse-gzip" and not offers["sse_compression"]:
        result.status = "n/a: this build has no sse.compression setting"
        return result
    if "delta" in variant and not offers["delta"]:
        result.status = "n/a: this build has no namespace delta setting"
        return result
    port = free_port()
    sse = variant.endswith(("-sse", "-sse-gzip"))
    proc = start_node(port, "deflate" in variant) if node else start_tidings(port, variant, offers, scratch)
    cpus = os.cpu_count() or 1
    pin(proc.pid, {0})
    client_cpus = set(range(1, cpus)) or {0}
    feed = ticker_messages()
    tickers = [next(feed) for _ in range(args.messages)]
    if node:
        bodies = [json.dumps(t, separators=(",", ":")).encode() for t in tickers]
    else:
        bodies = [
            json.dumps({"channel": CHANNEL, "data": t, "event": "ticker"}, separators=(",", ":")).encode()
            for t in tickers
        ]
    subscribe = b""
    if not node:
        op: dict[str, Any] = {"op": "subscribe", "channel": CHANNEL}
        if "delta" in variant:
            op["delta"] = "fossil"
        subscribe = json.dumps(op).encode()
    workers = []
    try:
        wait_port(port, proc)
        share = [
            args.subscribers // args.procs + (i < args.subscribers % args.procs) for i in range(args.procs)
        ]
        for count in share:
            parent, child = multiprocessing.Pipe()
            spec = {
                "url": f"ws://127.0.0.1:{port}/ws" + (f"?channel={CHANNEL}" if node else ""),
                "port": port,
                "subscribe": subscribe,
                "count": count,
                "messages": args.messages,
                "flavor": "node" if node else "tidings",
                "deadline": args.deadline,
                "cpus": client_cpus,
                "transport": "sse" if sse else "ws",
                "sse_path": f"/sse?channel={CHANNEL}",
                "gzip": variant.endswith("-gzip"),
            }
            process = multiprocessing.Process(target=subscribers_process, args=(spec, child), daemon=True)
            process.start()
            workers.append((process, parent))
        extensions: set[str] = set()
        for _, pipe in workers:
            tag, value = pipe.recv()
            assert tag == "ready", tag
            extensions.update(value)
        result.extension = " | ".join(sorted(extensions)) or "none"
        time.sleep(0.5)  # let the set-up's last writes settle
        cpu_before = cpu_seconds(proc.pid)
        for _, pipe in workers:
            pipe.send("go")
        sent = asyncio.run(publish_all(port, "node" if node else "tidings", bodies))
        latencies: list[float] = []
        last = sent[0]
        for process, pipe in workers:
            tag, report = pipe.recv()
            result.deliveries += report["received"]
            result.wire_bytes += report["wire"]
            result.message_bytes += report["message_bytes"]
            result.deltas += report["deltas"]
            result.client_cpu += report["client_cpu"]
            for seq, raw in enumerate(report["times"]):
                times = array("d")
                times.frombytes(raw)
                if times:
                    last = max(last, max(times))
                    latencies.extend(t - sent[seq] for t in times)
            process.join(10)
        result.server_cpu = cpu_seconds(proc.pid) - cpu_before
        result.seconds = last - sent[0]
        result.expected = args.subscribers * args.messages
        latencies.sort()
        result.latency_ms = {
            "p50": percentile(latencies, 0.5) * 1e3,
            "p99": percentile(latencies, 0.99) * 1e3,
            "max": (latencies[-1] if latencies else 0.0) * 1e3,
        }
        if result.deliveries < result.expected:
            result.status = (
                f"incomplete: {result.deliveries:,} of {result.expected:,} within {args.deadline:.0f} s"
            )
    finally:
        for process, _ in workers:
            if process.is_alive():
                process.terminate()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return result


# reporting -------------------------------------------------------------------------------------


def table(results: list[Result], args: argparse.Namespace) -> str:
    lines = [
        f"{args.subscribers:,} WebSocket subscribers of one channel, {args.messages} ticker messages "
        f"(~1 KB of JSON, a few fields changed per message), published back to back; clients: "
        f"Python `websockets` (sans-I/O, permessage-deflate offered with its defaults) in "
        f"{args.procs} process(es). {platform.node()}, {os.cpu_count()} CPUs, "
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC.",
        "",
        "| variant | negotiated | bytes/delivery (wire) | message bytes | wire/message | vs uncompressed "
        "| server CPU/delivery | deliveries/s | p50 | p99 | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    # "vs uncompressed": against the same server's plain variant (full messages, no
    # compression) when it ran, else against the message's own size
    plain = {r.variant: r.bytes_per_delivery for r in results if r.variant in BASELINES and r.status == "ok"}
    for r in results:
        if r.status.startswith("n/a"):
            lines.append(f"| {r.variant} | | | | | | | | | | {r.status} |")
            continue
        note = r.status if r.status != "ok" else ""
        if r.deltas:
            note = (note + "; " if note else "") + f"{r.deltas / max(1, r.deliveries):.0%} deltas"
        message = max(1.0, r.message_bytes_per_delivery)
        baseline = plain.get(baseline_of(r.variant), message)
        lines.append(
            f"| {r.variant} | {r.extension} | {r.bytes_per_delivery:,.0f} | {message:,.0f} "
            f"| {r.bytes_per_delivery / message:.0%} | {r.bytes_per_delivery / baseline:.0%} "
            f"| {r.cpu_us_per_delivery:.1f} µs | {r.deliveries_per_s:,.0f} "
            f"| {r.latency_ms.get('p50', 0):.0f} ms | {r.latency_ms.get('p99', 0):.0f} ms | {note} |"
        )
    return "\n".join(lines) + "\n"


def chart(results: list[Result], path: Path, note: str) -> bool:
    """Bytes per delivery, server CPU per delivery and deliveries/s per variant, one panel each
    (tidings' rows highlighted, n/a rows empty), to ``path``; False without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        print("chart skipped: matplotlib is not installed (pip install -e '.[bench]')", file=sys.stderr)
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("bytes per delivery on the wire", lambda r: r.bytes_per_delivery),
        ("server CPU per delivery (µs)", lambda r: r.cpu_us_per_delivery),
        ("deliveries/s", lambda r: r.deliveries_per_s),
    )
    rows = list(range(len(results)))
    fig, axes = plt.subplots(1, len(panels), figsize=(10, 1.6 + 0.34 * len(rows)), dpi=100, sharey=True)
    for ax, (label, value) in zip(axes, panels, strict=True):
        ok = [r.status == "ok" for r in results]
        values = [value(r) if good else 0.0 for r, good in zip(results, ok, strict=True)]
        colors = ["#1f6feb" if r.variant.startswith("tidings") else "#9aa4ad" for r in results]
        ax.barh(rows, values, color=colors)
        top = max(values, default=0.0) or 1.0
        for i, (v, r) in enumerate(zip(values, results, strict=True)):
            text = f"{v:,.0f}" if r.status == "ok" else r.status.split(":")[0]  # n/a, incomplete
            ax.text(v + top * 0.02, i, text, va="center", fontsize=7)
        ax.set_xlim(0, top * 1.25)
        ax.set_xlabel(label, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(axis="x", alpha=0.3)
        ax.set_axisbelow(True)
    axes[0].set_yticks(rows, [r.variant for r in results])
    axes[0].invert_yaxis()
    fig.suptitle("Fan-out of a 1 KB ticker: compression and delta updates", fontsize=9, fontweight="bold")
    fig.text(0.01, 0.01, note, fontsize=6.5, color="#555555")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return True


def write_doc(text: str) -> None:
    begin, end = "<!-- bench:compression -->", "<!-- /bench:compression -->"
    doc = DOC.read_text()
    if begin not in doc or end not in doc:
        raise SystemExit(f"{DOC} has no {begin} … {end} markers")
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    DOC.write_text(f"{head}{begin}\n{text}{end}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}"
    )
    parser.add_argument(
        "--procs", type=int, default=2, help="subscriber processes (they share the client CPUs)"
    )
    parser.add_argument("--deadline", type=float, default=120.0, help="seconds to wait for every delivery")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite docs/topics/performance.md")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")
    offers = tidings_offers()
    results_dir = ROOT / "benchmarks" / "results"
    results_dir.mkdir(exist_ok=True)
    out = results_dir / f"compression-{time.strftime('%Y-%m-%d-%H%M', time.gmtime())}.jsonl"
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for i, variant in enumerate(variants, 1):
            print(f"[{i}/{len(variants)}] {variant} …", end=" ", flush=True, file=sys.stderr)
            result = run_variant(variant, args, offers, Path(scratch))
            results.append(result)
            print(
                result.status
                if result.status.startswith("n/a")
                else f"{result.deliveries_per_s:,.0f} deliveries/s, "
                f"{result.bytes_per_delivery:,.0f} B/delivery, p99 {result.latency_ms.get('p99', 0):.0f} ms",
                file=sys.stderr,
            )
            with out.open("a") as f:
                record = {
                    **asdict(result),
                    "bytes_per_delivery": result.bytes_per_delivery,
                    "cpu_us_per_delivery": result.cpu_us_per_delivery,
                    "deliveries_per_s": result.deliveries_per_s,
                }
                f.write(json.dumps(record) + "\n")
    text = table(results, args)
    print(text)
    if not args.no_docs:
        note = (
            f"{args.subscribers:,} subscribers, {args.messages} messages; {os.cpu_count()} CPUs; "
            f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC"
        )
        if chart(results, CHART, note):
            text = f"![bytes, CPU and deliveries/s per variant](../img/{CHART.name})\n\n{text}"
        write_doc(text)


if __name__ == "__main__":
    main()
