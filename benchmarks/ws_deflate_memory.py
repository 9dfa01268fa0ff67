"""What permessage-deflate costs an idle WebSocket connection: server RSS per connection, with
and without the extension negotiated (issue 19: at most 1.5x).

``python benchmarks/ws_deflate_memory.py [--conns 10000] [--engine fast]`` runs ``tidings serve``
twice on loopback (a fresh process each time), opens ``--conns`` raw WebSocket connections that
each subscribe to a channel and then stay idle: once offering nothing, once offering
``permessage-deflate; client_max_window_bits`` (what browsers offer) and sending their subscribe
compressed, as browsers do. It reports the server's RSS growth per connection for each, their
ratio, and writes the figures as JSON (``--out``).

``--publish N`` then publishes N ticker-like publications (~1 KB, consecutive ones alike, so the
compressed ones go chained) on each of the ``--channels`` channels, lets every connection read
them, and measures again once idle: what a connection keeps after traffic (its last chained
publication, a compressor...) shows there, not in the idle figure.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
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


async def open_one(
    port: int, offer: bool, i: int, channels: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
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
    command = json.dumps({"op": "subscribe", "ref": 1, "channel": f"idle:{i % channels}"}).encode()
    writer.write(client_frame(command, offer))
    first = await reader.readexactly(2)
    await reader.readexactly(first[1] & 0x7F)  # "subscribed" (short: never compressed)
    return reader, writer


def ticker(n: int) -> dict[str, object]:
    """~1 KB of JSON, most of it the same from one publication to the next."""
    return {
        "rows": [{"id": i, "symbol": f"SYM{i}", "price": round(100 + i + n * 0.25, 2)} for i in range(24)]
    }


async def drain(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while await reader.read(65536):
            pass


async def traffic(port: int, channels: int, rounds: int) -> float:
    """``rounds`` publications on each channel (``POST /api/broadcast``, 1,000 channels a
    request); the seconds it took."""
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        for n in range(rounds):
            for first in range(0, channels, 1000):
                names = [f"idle:{c}" for c in range(first, min(channels, first + 1000))]
                answer = await client.post("/api/broadcast", json={"channels": names, "data": ticker(n)})
                answer.raise_for_status()
    return time.monotonic() - started


async def hold(port: int, pid: int, conns: int, offer: bool, channels: int, rounds: int) -> dict[str, float]:
    # a few connections first: what the first one allocates (imports, caches) is not per
    # connection
    warm = [await open_one(port, offer, i, channels) for i in range(50)]
    await asyncio.sleep(1)
    before = rss_kb(pid)
    held = []
    started = time.monotonic()
    for batch in range(0, conns, 500):
        end = min(conns, batch + 500)
        held += await asyncio.gather(*(open_one(port, offer, i, channels) for i in range(batch, end)))
    opened_s = time.monotonic() - started
    await asyncio.sleep(3)
    after = rss_kb(pid)
    result: dict[str, float] = {
        "connections": len(held),
        "rss_before_kb": before,
        "rss_after_kb": after,
        "kb_per_connection": round((after - before) / len(held), 3),
        "open_s": round(opened_s, 1),
    }
    if rounds:
        readers = [asyncio.create_task(drain(reader)) for reader, _ in warm + held]
        result["publish_s"] = round(await traffic(port, channels, rounds), 1)
        await asyncio.sleep(5)  # every connection has read everything: idle again
        idle = rss_kb(pid)
        result["rss_after_traffic_kb"] = idle
        result["kb_per_connection_after_traffic"] = round((idle - before) / len(held), 3)
    for _, writer in warm + held:
        writer.close()
    if rounds:
        for task in readers:
            task.cancel()
    return result


def measure(conns: int, engine: str, offer: bool, channels: int = 100, rounds: int = 0) -> dict[str, float]:
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
        return asyncio.run(hold(port, proc.pid, conns, offer, channels, rounds))
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conns", type=int, default=10_000)
    parser.add_argument("--engine", default="fast", choices=["fast", "uvicorn"])
    parser.add_argument("--channels", type=int, default=100, help="connection i: idle:{i %% channels}")
    parser.add_argument("--publish", type=int, default=0, help="per channel, then measured again")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    plain = measure(args.conns, args.engine, False, args.channels, args.publish)
    deflate = measure(args.conns, args.engine, True, args.channels, args.publish)
    result: dict[str, object] = {
        "engine": args.engine,
        "channels": args.channels,
        "publications_per_channel": args.publish,
        "plain": plain,
        "deflate": deflate,
        "ratio": round(deflate["kb_per_connection"] / plain["kb_per_connection"], 3),
        "load_average": os.getloadavg(),
    }
    if args.publish:
        result["ratio_after_traffic"] = round(
            deflate["kb_per_connection_after_traffic"] / plain["kb_per_connection_after_traffic"], 3
        )
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
