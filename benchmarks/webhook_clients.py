"""Which HTTP client should send webhooks: requests/s and CPU per request of each candidate.

    PYTHONPATH=src python benchmarks/webhook_clients.py [--requests 10000] [--endpoints 10]
        [--concurrency 4] [--rounds 2] [--clients httpx,httpcore,aiohttp,h11,tidings]
        [--json out.json]

Each candidate POSTs ``--requests`` webhook-sized bodies (a publication's JSON, about 200
bytes, with the five webhook headers) round-robin to ``--endpoints`` ports of the Node receiver
(benchmarks/webhook_receiver.js, which only counts), ``--concurrency`` requests in flight per
endpoint, one keep-alive pool per endpoint (as the dispatcher holds them), reading the status,
``retry-after`` and the body. Reported per candidate: requests/s and this process's CPU time per
request (user + system, from ``resource``), the best of ``--rounds`` interleaved rounds: on a shared
machine CPU per request is the figure that moves least. A candidate that is not installed
(aiohttp is not a tidings dependency) is skipped with a note.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
BODY = json.dumps(
    {
        "channel": "bench:1",
        "offset": 12345,
        "epoch": "x1y2z3",
        "id": "0123456789abcdef",
        "time": 0,
        "event": "message",
        "data": {"i": 1, "pad": "x" * 100},
    }
).encode()
HEADERS = {
    "content-type": "application/json",
    "user-agent": "tidings-webhooks/1",
    "webhook-id": "msg_0123456789abcdef",
    "webhook-timestamp": "1700000000",
    "webhook-signature": "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
}

Post = Callable[[int, str], Awaitable[int]]


async def make_httpx(urls: list[str], concurrency: int) -> tuple[Post, Callable[[], Awaitable[None]]]:
    import httpx

    clients = [
        httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(10),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        for _ in urls
    ]

    async def post(i: int, url: str) -> int:
        client = clients[i]
        request = client.build_request("POST", url, content=BODY, headers=HEADERS)
        response = await client.send(request, stream=True)
        try:
            async for _ in response.aiter_raw():
                pass
        finally:
            await response.aclose()
        response.headers.get("retry-after")
        return response.status_code

    async def close() -> None:
        for client in clients:
            await client.aclose()

    return post, close


async def make_httpcore(urls: list[str], concurrency: int) -> tuple[Post, Callable[[], Awaitable[None]]]:
    import httpcore

    pools = [httpcore.AsyncConnectionPool(max_connections=concurrency) for _ in urls]
    headers = list(HEADERS.items())

    async def post(i: int, url: str) -> int:
        response = await pools[i].request("POST", url, headers=headers, content=BODY)
        return response.status

    async def close() -> None:
        for pool in pools:
            await pool.aclose()

    return post, close


async def make_aiohttp(urls: list[str], concurrency: int) -> tuple[Post, Callable[[], Awaitable[None]]]:
    import aiohttp

    sessions = [
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency), timeout=aiohttp.ClientTimeout(total=10)
        )
        for _ in urls
    ]

    async def post(i: int, url: str) -> int:
        async with sessions[i].post(url, data=BODY, headers=HEADERS, allow_redirects=False) as response:
            await response.read()
            response.headers.get("retry-after")
            return response.status

    async def close() -> None:
        for session in sessions:
            await session.close()

    return post, close


async def make_h11(urls: list[str], concurrency: int) -> tuple[Post, Callable[[], Awaitable[None]]]:
    """A minimal keep-alive pool: asyncio streams + h11 (pure Python parsing)."""
    import h11

    idle: list[list[tuple[asyncio.StreamReader, asyncio.StreamWriter, h11.Connection]]] = [[] for _ in urls]
    hosts = []
    for url in urls:
        hostport = url.split("/")[2]
        host, port = hostport.split(":")
        hosts.append((host, int(port), hostport))
    headers = [(k.encode(), v.encode()) for k, v in HEADERS.items()]

    async def post(i: int, url: str) -> int:
        host, port, hostport = hosts[i]
        if idle[i]:
            reader, writer, conn = idle[i].pop()
            conn.start_next_cycle()
        else:
            reader, writer = await asyncio.open_connection(host, port)
            conn = h11.Connection(h11.CLIENT)
        request = h11.Request(
            method="POST",
            target="/hook",
            headers=[(b"host", hostport.encode()), *headers, (b"content-length", str(len(BODY)).encode())],
        )
        writer.write(conn.send(request) + conn.send(h11.Data(data=BODY)) + conn.send(h11.EndOfMessage()))
        status = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.EndOfMessage):
                break
        idle[i].append((reader, writer, conn))
        return status

    async def close() -> None:
        for pool in idle:
            for _, writer, _ in pool:
                writer.close()

    return post, close


async def make_tidings(urls: list[str], concurrency: int) -> tuple[Post, Callable[[], Awaitable[None]]]:
    import ipaddress

    from tidings.webhooks.http_pool import HttpPool

    pool = HttpPool(
        allowed=[ipaddress.ip_network("127.0.0.0/8")],
        response_cap=65536,
        verify=ssl.create_default_context(),
        user_agent="tidings-webhooks/1",
    )
    headers = {k: v for k, v in HEADERS.items() if k != "user-agent"}

    async def post(i: int, url: str) -> int:
        return (await pool.post(str(i), url, headers, BODY)).status

    async def close() -> None:
        pool.close()

    return post, close


CLIENTS = {
    "httpx": make_httpx,
    "httpcore": make_httpcore,
    "aiohttp": make_aiohttp,
    "h11": make_h11,
    "tidings": make_tidings,
}


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def one_round(name: str, urls: list[str], requests: int, concurrency: int) -> dict[str, Any]:
    post, close = await CLIENTS[name](urls, concurrency)
    per = requests // len(urls)

    async def lane(i: int, url: str) -> None:
        async def worker(count: int) -> None:
            for _ in range(count):
                status = await post(i, url)
                assert status == 200, status

        await asyncio.gather(*(worker(per // concurrency) for _ in range(concurrency)))

    # warm up: open the connections
    await asyncio.gather(*(post(i, url) for i, url in enumerate(urls) for _ in range(concurrency)))
    started, cpu0 = time.perf_counter(), cpu()
    await asyncio.gather(*(lane(i, url) for i, url in enumerate(urls)))
    wall, used = time.perf_counter() - started, cpu() - cpu0
    await close()
    done = len(urls) * concurrency * (per // concurrency)
    return {"requests_per_s": round(done / wall), "cpu_us_per_request": round(used / done * 1e6, 1)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        "node",
        str(HERE / "webhook_receiver.js"),
        str(args.endpoints),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stdin is not None
    ports = json.loads(await process.stdout.readline())
    urls = [f"http://127.0.0.1:{port}/hook" for port in ports]
    names = [n for n in args.clients.split(",") if n]
    results: dict[str, Any] = {}
    try:
        for _ in range(args.rounds):
            for name in names:
                try:
                    got = await one_round(name, urls, args.requests, args.concurrency)
                except ImportError as exc:
                    results[name] = {"skipped": f"not installed: {exc.name}"}
                    continue
                best = results.get(name)
                if best is None or got["cpu_us_per_request"] < best["cpu_us_per_request"]:
                    results[name] = got
                print(name, got, flush=True)
    finally:
        process.stdin.close()
        await process.wait()
    return {
        "requests": args.requests,
        "endpoints": args.endpoints,
        "concurrency": args.concurrency,
        "load_average": load_average(),
        "clients": results,
    }


def load_average() -> list[str]:
    """The machine's 1, 5 and 15 minute load averages (it may be shared: say so beside a figure)."""
    return Path("/proc/loadavg").read_text().split()[:3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import uvloop

    uvloop.install()
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
