"""The connect proxy's cost (issue 20, item 5), against a real ``tidings serve`` and a real backend.

Two processes besides this one: ``tidings serve`` (the sockets engine) with ``[proxy.connect]``
pointing at a Starlette backend run by uvicorn (this file with ``--backend PORT``), which answers
``{"result": {"user": …}}`` at once and counts the requests it has in flight.

1. **Latency**: ``--samples`` WebSocket clients one after another, each from opening the socket
   to the ``subscribed`` reply of its first subscribe (``connect`` sent first), once through a
   node with the connect proxy and once through a node without (anonymous connect): p50, p99.
2. **Storm**: ``--storm`` clients connecting at once through the proxy with
   ``proxy.max_concurrency`` = ``--concurrency``: how many were admitted, the most requests the
   backend had in flight at once, and the time until the last was subscribed.

    python benchmarks/proxy_connect.py [--samples 300] [--storm 1000] [--concurrency 16] [--json out.json]

Needs ``ulimit -n`` above the storm's client count (twice it: the node's end too).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# the backend ---------------------------------------------------------------------------------


def run_backend(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    state = {"in_flight": 0, "max_in_flight": 0, "requests": 0}

    async def connect_proxy(request: Request) -> JSONResponse:
        state["in_flight"] += 1
        state["requests"] += 1
        state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
        try:
            body = await request.json()
            await asyncio.sleep(0)  # let concurrent requests overlap as a real backend's would
            return JSONResponse({"result": {"user": f"u-{body['client'][:8]}"}})
        finally:
            state["in_flight"] -= 1

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse(state)

    async def reset(request: Request) -> JSONResponse:
        state.update(in_flight=0, max_in_flight=0, requests=0)
        return JSONResponse(state)

    app = Starlette(
        routes=[
            Route("/connect", connect_proxy, methods=["POST"]),
            Route("/stats", stats),
            Route("/reset", reset, methods=["POST"]),
        ]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", backlog=4096)


# the node ------------------------------------------------------------------------------------


def start(argv: list[str], port: int) -> subprocess.Popen[bytes]:
    # Logs to a file: a pipe nobody reads fills up and blocks the node's loop.
    log = tempfile.NamedTemporaryFile(prefix="proxy-bench-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(Path(log.name).read_text()[-2000:]) from None
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"nothing listens on {port}")


def node(config: str, port: int) -> subprocess.Popen[bytes]:
    path = Path(tempfile.mkdtemp()) / "tidings.toml"
    path.write_text(f"port = {port}\n" + config)
    argv = [sys.executable, "-m", "tidings", "serve", "--config", str(path)]
    return start(argv, port)


# the clients ---------------------------------------------------------------------------------


async def one_client(url: str, channel: str) -> float:
    """Seconds from opening the socket to the first subscribe's ``subscribed`` reply."""
    started = time.perf_counter()
    async with connect(url, additional_headers={"Cookie": "session=bench"}, open_timeout=60) as ws:
        await ws.send('{"op":"connect","ref":1}')
        await ws.send(orjson.dumps({"op": "subscribe", "ref": 2, "channel": channel}).decode())
        while True:
            reply = orjson.loads(await asyncio.wait_for(ws.recv(), 60))
            if reply.get("op") == "subscribed":
                return time.perf_counter() - started
            if reply.get("op") == "error":
                raise RuntimeError(reply)


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 3),
    }


async def latency(proxied: int, plain: int, samples: int) -> dict[str, dict[str, float]]:
    """Alternating clients of the two nodes, so that the machine's load drifts alike for both."""
    urls = {"with_proxy": f"ws://127.0.0.1:{proxied}/ws", "without_proxy": f"ws://127.0.0.1:{plain}/ws"}
    for url in urls.values():  # warm up
        for _ in range(20):
            await one_client(url, "bench")
    taken: dict[str, list[float]] = {name: [] for name in urls}
    for _ in range(samples):
        for name, url in urls.items():
            taken[name].append(await one_client(url, "bench"))
    return {name: percentiles(values) for name, values in taken.items()}


async def storm(port: int, backend: int, clients: int) -> dict[str, Any]:
    url = f"ws://127.0.0.1:{port}/ws"
    async with httpx.AsyncClient() as http:
        await http.post(f"http://127.0.0.1:{backend}/reset")
        started = time.perf_counter()
        results = await asyncio.gather(
            *(one_client(url, "storm") for _ in range(clients)), return_exceptions=True
        )
        elapsed = time.perf_counter() - started
        stats = (await http.get(f"http://127.0.0.1:{backend}/stats")).json()
    admitted = [r for r in results if isinstance(r, float)]
    return {
        "clients": clients,
        "admitted": len(admitted),
        "failures": sorted({repr(r)[:120] for r in results if not isinstance(r, float)})[:5],
        "backend_requests": stats["requests"],
        "backend_max_in_flight": stats["max_in_flight"],
        "all_subscribed_s": round(elapsed, 3),
        **percentiles(admitted or [0.0]),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    backend_port, proxied_port, plain_port = free_port(), free_port(), free_port()
    processes = [start([sys.executable, __file__, "--backend", str(backend_port)], backend_port)]
    try:
        proxy = (
            f"[proxy]\nmax_concurrency = {args.concurrency}\n"
            f'[proxy.connect]\nurl = "http://127.0.0.1:{backend_port}/connect"\ntimeout = 30\n'
            "[limits]\nmax_connections_per_ip = 100000\n"
        )
        processes.append(node(proxy, proxied_port))
        processes.append(node("[limits]\nmax_connections_per_ip = 100000\n", plain_port))
        result: dict[str, Any] = {"samples": args.samples}
        print("latency with and without the connect proxy …", file=sys.stderr)
        result.update(await latency(proxied_port, plain_port, args.samples))
        print(f"a storm of {args.storm} clients …", file=sys.stderr)
        result["storm"] = await storm(proxied_port, backend_port, args.storm)
        result["concurrency"] = args.concurrency
        return result
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--storm", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    if arguments.backend:
        run_backend(arguments.backend)
        sys.exit(0)
    os.environ.setdefault("PYTHONPATH", str(ROOT / "src"))
    outcome = asyncio.run(main(arguments))
    print(json.dumps(outcome, indent=2))
    if arguments.json:
        arguments.json.write_text(json.dumps(outcome, indent=2) + "\n")
