"""What permessage-deflate costs an idle WebSocket connection: server RSS per connection, with
and without the extension negotiated (issue 19: at most 1.5x).

``python benchmarks/ws_deflate_memory.py [--conns 10000] [--engine fast]`` runs ``tidings serve``
twice on loopback (a fresh process each time), opens ``--conns`` raw WebSocket connections that
each subscribe to a channel and then stay idle: once offering nothing, once offering
``permessage-deflate; client_max_window_bits`` (what browsers offer) and sending their subscribe
compressed, as browsers do. It reports the server's RSS growth per connection for each, their
ratio, and writes the figures as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import time
import zlib
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
OFFER = "permessage-deflate; client_max_window_bits"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def client_frame(payload: bytes, compressed: bool) -> bytes:
    key = os.urandom(4)
    if compressed:
        z = zlib.compressobj(6, zlib.DEFLATED, -15)
        payload = (z.compress(payload) + z.flush(zlib.Z_SYNC_FLUSH))[:-4]
    n = len(payload)
    assert n < 126
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes((0xC1 if compressed else 0x81, 0x80 | n)) + key + masked


async def open_one(port: int, offer: bool, i: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    ext = f"Sec-WebSocket-Extensions: {OFFER}\r\n" if offer else ""
    writer.write(
        (
            f"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    assert (b"permessage-deflate" in head) == offer, head
    command = json.dumps({"op": "subscribe", "ref": 1, "channel": f"idle:{i % 100}"}).encode()
    writer.write(client_frame(command, offer))
    first = await reader.readexactly(2)
    await reader.readexactly(first[1] & 0x7F)  # "subscribed" (short: never compressed)
    return reader, writer


async def hold(port: int, pid: int, conns: int, offer: bool) -> dict[str, float]:
    # a few connections first: what the first one allocates (imports, caches) is not per
    # connection
    warm = [await open_one(port, offer, i) for i in range(50)]
    await asyncio.sleep(1)
    before = rss_kb(pid)
    held = []
    started = time.monotonic()
    for batch in range(0, conns, 500):
        end = min(conns, batch + 500)
        held += await asyncio.gather(*(open_one(port, offer, i) for i in range(batch, end)))
    opened_s = time.monotonic() - started
    await asyncio.sleep(3)
    after = rss_kb(pid)
    for _, writer in warm + held:
        writer.close()
    return {
        "connections": len(held),
        "rss_before_kb": before,
        "rss_after_kb": after,
        "kb_per_connection": round((after - before) / len(held), 3),
        "open_s": round(opened_s, 1),
    }


def measure(conns: int, engine: str, offer: bool) -> dict[str, float]:
    """A fresh ``tidings serve``, ``conns`` idle connections, its RSS growth."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'src'}:{os.environ.get('PYTHONPATH', '')}",
        "TIDINGS_LOG_LEVEL": "warning",
        "TIDINGS_SERVER__ENGINE": engine,
        "TIDINGS_LIMITS__MAX_CONNECTIONS_PER_IP": str(conns * 2),
        "TIDINGS_LIMITS__PING_INTERVAL": "600",
        "TIDINGS_DRAIN_TIMEOUT": "1",
        "TIDINGS_LIMITS__IDLE_TIMEOUT": "1200",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tidings", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        return asyncio.run(hold(port, proc.pid, conns, offer))
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conns", type=int, default=10_000)
    parser.add_argument("--engine", default="fast", choices=["fast", "uvicorn"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    plain = measure(args.conns, args.engine, False)
    deflate = measure(args.conns, args.engine, True)
    result = {
        "engine": args.engine,
        "plain": plain,
        "deflate": deflate,
        "ratio": round(deflate["kb_per_connection"] / plain["kb_per_connection"], 3),
    }
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
