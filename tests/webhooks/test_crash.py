"""Durability: a server killed with SIGKILL and restarted delivers everything it accepted."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response

from conftest import FAST_WEBHOOKS, Receiver, free_port

SERVER_MAIN = Path(__file__).with_name("server_main.py")
SRC = Path(__file__).parents[2] / "src"


def start_server(settings_file: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    with open(settings_file.with_suffix(".log"), "ab") as log:
        return subprocess.Popen(
            [sys.executable, str(SERVER_MAIN), "--settings", str(settings_file), "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


async def wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    async with httpx.AsyncClient() as client:
        while True:
            assert process.poll() is None, "the server exited"
            try:
                if (await client.get(f"{base}/api/webhooks")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            await asyncio.sleep(0.05)


# Both ways of delivering: on the node's loop, and in its dispatcher process (which dies with the
# node: PR_SET_PDEATHSIG; the restarted node's new one loads the queue).
DISPATCHERS = pytest.mark.parametrize("dispatcher", ["inline", "process"])


@pytest.mark.slow
@DISPATCHERS
async def test_kill_9_with_100_deliveries_pending_then_restart_delivers_all_100(
    tmp_path: Path, receiver: Receiver, dispatcher: str
) -> None:
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(
        json.dumps(
            {
                "webhooks": {
                    **FAST_WEBHOOKS,
                    "store": str(tmp_path / "queue.db"),
                    "retry_schedule": [0.2, 0.5, 1, 1, 1, 1, 1],
                    "dispatcher": dispatcher,
                }
            }
        )
    )
    accepting = False
    accepted: set[str] = set()

    async def answer(request: Request, count: int) -> Response:
        if not accepting:
            return Response(status_code=503)
        accepted.add(request.headers["webhook-id"])
        return Response(status_code=200)

    url = receiver.on("/sink", answer)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_server(settings_file, port)
    try:
        await wait_ready(base, process)
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            created = await client.post("/api/webhooks", json={"url": url, "channels": ["c"]})
            assert created.status_code == 201
            for n in range(100):
                published = await client.post("/api/publish", json={"channel": "c", "data": n})
                assert published.status_code == 200
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        refused = {r.webhook_id for r in receiver.at("/sink")}

        accepting = True
        process = start_server(settings_file, port)
        await wait_ready(base, process)
        deadline = time.monotonic() + 20
        while len(accepted) < 100:
            assert time.monotonic() < deadline, len(accepted)
            await asyncio.sleep(0.05)
    finally:
        process.kill()
        process.wait(10)

    by_id: dict[str, set[bytes]] = {}
    for got in receiver.at("/sink"):
        by_id.setdefault(got.webhook_id, set()).add(got.body)
    assert len(by_id) == 100
    assert all(len(bodies) == 1 for bodies in by_id.values())  # duplicates share their id
    assert sorted(json.loads(next(iter(b)))["data"] for b in by_id.values()) == list(range(100))
    assert refused <= set(by_id)
    assert accepted == set(by_id)


async def burst_then_kill(
    tmp_path: Path,
    receiver: Receiver,
    *,
    endpoints: int,
    publications: int,
    kill_after: int,
    dispatcher: str = "inline",
) -> None:
    """Publish on 8 connections; SIGKILL the node once ``kill_after`` publishes were accepted
    (others still in flight), restart it, and check that every accepted publication reaches
    every endpoint (each once by webhook-id; at-least-once: a repeat keeps its id and body)."""
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(
        json.dumps(
            {
                "webhooks": {
                    **FAST_WEBHOOKS,
                    "store": str(tmp_path / "queue.db"),
                    "timeout": 5.0,
                    "dispatcher": dispatcher,
                }
            }
        )
    )
    seen: dict[str, set[tuple[str, str]]] = {}

    async def answer(request: Request, count: int) -> Response:
        seen.setdefault(request.url.path, set()).add(
            (request.headers["webhook-id"], (await request.body()).decode())
        )
        return Response(status_code=200)

    urls = [receiver.on(f"/burst/{n}", answer) for n in range(endpoints)]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process = start_server(settings_file, port)
    accepted: set[str] = set()
    try:
        await wait_ready(base, process)
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            for url in urls:
                assert (
                    await client.post("/api/webhooks", json={"url": url, "channels": ["b:*"]})
                ).status_code == 201
        killed = asyncio.Event()

        async def publisher(numbers: range) -> None:
            async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                for n in numbers:
                    try:
                        response = await client.post(
                            "/api/publish", json={"channel": f"b:{n % 7}", "data": n}
                        )
                    except httpx.TransportError:
                        return  # killed: this one was not accepted
                    if response.status_code != 200:
                        return
                    accepted.add(f"msg_{response.json()['id']}")
                    if len(accepted) >= kill_after and not killed.is_set():
                        killed.set()
                        os.kill(process.pid, signal.SIGKILL)

        await asyncio.gather(*(publisher(range(i, publications, 8)) for i in range(8)))
        assert killed.is_set(), "the burst ended before the kill"
        process.wait(10)
        process = start_server(settings_file, port)
        await wait_ready(base, process)
        deadline = time.monotonic() + 60 + publications * endpoints / 200

        def missing() -> int:
            return sum(
                len(accepted - {wid for wid, _ in seen.get(f"/burst/{n}", set())}) for n in range(endpoints)
            )

        while missing():
            assert time.monotonic() < deadline, f"{missing()} accepted deliveries never made"
            await asyncio.sleep(0.1)
    finally:
        process.kill()
        process.wait(10)
    for n in range(endpoints):
        bodies: dict[str, set[str]] = {}
        for wid, body in seen[f"/burst/{n}"]:
            bodies.setdefault(wid, set()).add(body)
        assert all(len(b) == 1 for b in bodies.values())  # a repeat is the same message


@pytest.mark.slow
@DISPATCHERS
async def test_kill_9_during_a_publish_burst_loses_no_accepted_delivery(
    tmp_path: Path, receiver: Receiver, dispatcher: str
) -> None:
    await burst_then_kill(
        tmp_path, receiver, endpoints=3, publications=400, kill_after=150, dispatcher=dispatcher
    )


@pytest.mark.long
@pytest.mark.timeout(600)
async def test_kill_9_during_a_long_publish_burst_loses_no_accepted_delivery(
    tmp_path: Path, receiver: Receiver
) -> None:
    await burst_then_kill(
        tmp_path, receiver, endpoints=5, publications=6000, kill_after=2500, dispatcher="process"
    )
