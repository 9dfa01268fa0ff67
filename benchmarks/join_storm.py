"""Many idle WebSocket clients subscribe to one channel of a real ``tidings serve``; then SIGTERM.

Issue 16: 10,000 such clients with presence and join/leave on kept a node at full CPU for over
ten minutes (each join goes to every subscriber) and SIGTERM could not stop it. This measures,
for one settings file: the time until every client is subscribed, the server's CPU time and
RSS growth meanwhile, the join frames the clients got, and SIGTERM to exit.

    python benchmarks/join_storm.py --clients 10000 [--join-leave] [--json out.json]

Run once by hand (not in the test suite, which has a 2,000-client version in
tests/ops/test_drain.py). Needs ``ulimit -n`` above the client count.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
CHANNEL = "room:hall"


def stat(pid: int) -> tuple[float, int]:
    """CPU seconds and RSS bytes of ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return cpu, int(fields[21]) * os.sysconf("SC_PAGE_SIZE")


def mask(payload: bytes, opcode: int = 1) -> bytes:
    key = os.urandom(4)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + key + body


class Client:
    def __init__(self) -> None:
        self.subscribed = asyncio.Event()
        self.joins = 0
        self.closed_with: int | None = None
        self.at = 0.0  # when it was subscribed (monotonic)
        self.attempts = 0
        self.failed = ""  # why it never got subscribed

    async def run(self, port: int) -> None:
        for self.attempts in range(1, 6):  # a full accept queue refuses: back off, as clients do
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                await asyncio.sleep(0.2 * 2**self.attempts)
        else:
            self.failed = "connect"
            return
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            writer.write(
                f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: "
                f"Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 101 "):
                self.failed = head.split(b"\r\n", 1)[0].decode()
                return
            writer.write(mask(orjson.dumps({"op": "subscribe", "ref": 1, "channel": CHANNEL})))
            while True:
                b = await reader.readexactly(2)
                size = b[1] & 0x7F
                if size >= 126:
                    size = int.from_bytes(await reader.readexactly(2 if size == 126 else 8))
                payload = await reader.readexactly(size)
                if b[0] & 0x0F == 9:  # a ping: an idle client still answers
                    writer.write(mask(payload, 10))
                    continue
                if b[0] & 0x0F == 8:
                    self.closed_with = int.from_bytes(payload[:2]) if len(payload) >= 2 else None
                    return
                if b[0] & 0x0F == 1:
                    op = orjson.loads(payload)["op"]
                    self.joins += op == "join"
                    if op == "subscribed":
                        self.at = time.monotonic()
                        self.subscribed.set()
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            if not self.subscribed.is_set():
                self.failed = type(exc).__name__
        finally:
            writer.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start(config: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")},
        "PYTHONPATH": str(ROOT / "src"),
    }
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tidings", "serve", "--config", str(config), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


async def main(a: argparse.Namespace) -> dict[str, object]:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    scratch = Path(tempfile.mkdtemp(prefix="join-storm-"))
    config = scratch / "tidings.toml"
    text = f"drain_timeout = {a.drain_timeout}\n[limits]\nmax_connections_per_ip = {a.clients + 100}\n"
    if a.join_leave:
        text += "[namespaces.room]\npresence = true\njoin_leave = true\n"
    config.write_text(text)
    port = free_port()
    server = start(config, port, scratch / "server.log")
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            await asyncio.sleep(0.05)
    cpu0, rss0 = stat(server.pid)
    started = time.monotonic()
    clients = [Client() for _ in range(a.clients)]
    tasks = []
    for i in range(0, a.clients, 500):
        tasks += [asyncio.create_task(c.run(port)) for c in clients[i : i + 500]]
        await asyncio.sleep(0.05)
    deadline = started + a.max_wait
    subscribed = 0
    for c in clients:
        try:
            await asyncio.wait_for(c.subscribed.wait(), max(0.01, deadline - time.monotonic()))
            subscribed += 1
        except TimeoutError:
            pass
    took = max((c.at for c in clients), default=started) - started
    cpu1, rss1 = stat(server.pid)
    stopping = time.monotonic()
    server.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.to_thread(server.wait, 120)
    except subprocess.TimeoutExpired:
        server.kill()
        code = None
    stopped = time.monotonic() - stopping
    await asyncio.wait(tasks, timeout=10)
    result = {
        "clients": a.clients,
        "join_leave": a.join_leave,
        "subscribed": subscribed,
        "subscribe_all_s": round(took, 2),
        "server_cpu_s": round(cpu1 - cpu0, 2),
        "rss_per_connection_kb": round((rss1 - rss0) / max(subscribed, 1) / 1024, 2),
        "join_frames": sum(c.joins for c in clients),
        "failures": dict(Counter(c.failed for c in clients if c.failed)),
        "connect_retries": sum(max(0, c.attempts - 1) for c in clients),
        "closed_1012": sum(c.closed_with == 1012 for c in clients),
        "sigterm_to_exit_s": round(stopped, 2),
        "exit_code": code,
        "drain_timeout": a.drain_timeout,
    }
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=10000)
    parser.add_argument("--join-leave", action="store_true", help="presence and join/leave on")
    parser.add_argument("--drain-timeout", type=float, default=10.0)
    parser.add_argument("--max-wait", type=float, default=300.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    out = asyncio.run(main(args))
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
