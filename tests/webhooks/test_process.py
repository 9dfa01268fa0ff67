"""The dispatcher process (``webhooks.dispatcher = "process"``, tidings.webhooks.worker): it
delivers from the SQLite and the Redis queue, uses an endpoint changed through the API at once,
is restarted when it dies alone without losing a delivery, and dies with its node."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook
from starlette.requests import Request
from starlette.responses import Response
from test_crash import start_server, wait_ready
from tests.redis_server import RedisServer, redis_available

from conftest import FAST_WEBHOOKS, Hub, HubFactory, Receiver, free_port, status, wait_for

PROCESS = {"dispatcher": "process"}


def child_of(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_text()


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper is dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def verifies(secret: str, got: Any) -> bool:
    try:
        Webhook(secret).verify(got.body, got.headers)
    except Exception:
        return False
    return True


@contextlib.asynccontextmanager
async def queue(kind: str, make_hub: HubFactory) -> AsyncIterator[Hub]:
    """A node whose deliveries run in its dispatcher process, on a SQLite or a Redis queue."""
    if kind == "sqlite":
        yield await make_hub(PROCESS)
        return
    if not redis_available():
        pytest.skip("redis-server is not installed")
    redis_server = RedisServer()
    await asyncio.to_thread(redis_server.start)
    try:
        yield await make_hub({**PROCESS, "store": "", "poll_interval": 0.1}, broker=redis_server.url)
    finally:
        await asyncio.to_thread(redis_server.stop)


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_the_dispatcher_process_delivers_and_signs_with_a_rotated_secret_at_once(
    kind: str, make_hub: HubFactory, receiver: Receiver
) -> None:
    async with queue(kind, make_hub) as hub:
        service = hub.server.service
        assert service.dispatcher is None and service.process is not None
        assert service.process.proc is not None and service.process.proc.pid != os.getpid()
        assert alive(service.process.proc.pid)
        endpoint = await hub.create(receiver.on("/a", status(200)), ["c:*"])
        for n in range(20):
            await hub.publish("c:1", n)
        await wait_for(lambda: len(receiver.at("/a")) >= 20, what="20 deliveries")
        assert all(verifies(endpoint["secret"], got) for got in receiver.at("/a"))
        assert sorted(got.json()["data"] for got in receiver.at("/a")) == list(range(20))

        rotated = await hub.client.post(f"/api/webhooks/{endpoint['id']}/rotate-secret", json={"grace": 0})
        assert rotated.status_code == 200, rotated.text
        secret = rotated.json()["secret"]
        assert secret != endpoint["secret"]
        await hub.publish("c:1", "after")
        await wait_for(lambda: len(receiver.at("/a")) >= 21, what="the delivery after the rotation")
        after = receiver.at("/a")[-1]
        assert after.json()["data"] == "after"
        assert verifies(secret, after) and not verifies(endpoint["secret"], after)

        # moved: the next delivery goes to the new URL, none to the old
        moved = await hub.client.patch(
            f"/api/webhooks/{endpoint['id']}", json={"url": receiver.on("/b", status(200))}
        )
        assert moved.status_code == 200, moved.text
        await hub.publish("c:1", "moved")
        await wait_for(lambda: len(receiver.at("/b")) == 1, what="the delivery to the new URL")
        assert len(receiver.at("/a")) == 21

        # a test event and a replay, both through the node's API, made by the child
        assert (await hub.client.post(f"/api/webhooks/{endpoint['id']}/test")).status_code == 202
        await wait_for(lambda: len(receiver.at("/b")) == 2, what="the test event")
        assert receiver.at("/b")[1].json()["event"] == "webhook.test"
        oldest = (await hub.deliveries(endpoint["id"]))[-1]["id"]  # newest first
        replayed = await hub.client.post(
            f"/api/webhooks/{endpoint['id']}/replay", json={"delivery_id": oldest}
        )
        assert replayed.status_code == 200, replayed.text
        await wait_for(lambda: len(receiver.at("/b")) == 3, what="the replay")

        # the attempt counts reach the node's metrics through the child's reports
        def successes() -> float:
            return service.attempt_counts.get("success", 0)

        await wait_for(lambda: successes() >= 24, what="the attempts counted")
        metrics = (await hub.client.get("/metrics")).text
        assert 'tidings_webhook_attempts_total{outcome="success"} 24.0' in metrics
        assert "tidings_webhook_queue_depth 0.0" in metrics


async def test_a_dispatcher_process_that_dies_alone_is_restarted_and_loses_nothing(
    make_hub: HubFactory, receiver: Receiver
) -> None:
    accepting = False

    async def answer(request: Request, count: int) -> Response:
        return Response(status_code=200 if accepting else 503)

    hub = await make_hub(PROCESS)
    process = hub.server.service.process
    assert process is not None and process.proc is not None
    endpoint = await hub.create(receiver.on("/r", answer), ["c"])
    published = {f"msg_{(await hub.publish('c', n))['id']}" for n in range(30)}
    await wait_for(lambda: len(receiver.at("/r")) >= 30, what="first attempts (refused)")
    first = process.proc.pid
    os.kill(first, signal.SIGKILL)
    await wait_for(lambda: process.restarts == 1 and process.proc is not None, what="a restart")
    assert process.proc is not None and process.proc.pid != first
    accepting = True
    published |= {f"msg_{(await hub.publish('c', n))['id']}" for n in range(30, 40)}

    def delivered() -> set[str]:
        return {got.webhook_id for got in receiver.at("/r")}

    await wait_for(lambda: published <= delivered(), what="every delivery after the restart")
    deadline = time.monotonic() + 10
    while len(await hub.deliveries(endpoint["id"], "succeeded")) < 40:  # recorded by the new child
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_a_node_killed_with_sigkill_takes_its_dispatcher_process_with_it(
    tmp_path: Path, receiver: Receiver
) -> None:
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(
        json.dumps({"webhooks": {**FAST_WEBHOOKS, **PROCESS, "store": str(tmp_path / "queue.db")}})
    )
    url = receiver.on("/down", status(503))  # retried every 0.1 s while the child lives
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    node = start_server(settings_file, port)
    try:
        await wait_ready(base, node)
        await wait_for(lambda: len(child_of(node.pid)) == 1, what="the dispatcher process")
        (child,) = child_of(node.pid)
        assert "tidings.webhooks.worker" in command_line(child)
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            assert (
                await client.post("/api/webhooks", json={"url": url, "channels": ["c"]})
            ).status_code == 201
            for n in range(5):
                assert (
                    await client.post("/api/publish", json={"channel": "c", "data": n})
                ).status_code == 200
        await wait_for(lambda: len(receiver.at("/down")) >= 10, what="attempts (retried)")
        os.kill(node.pid, signal.SIGKILL)
        node.wait(10)
        await wait_for(lambda: not alive(child), within=5, what="the child to die with its node")
        await asyncio.sleep(0.5)  # let attempts already on the wire land before counting
        attempts = len(receiver.at("/down"))
        await asyncio.sleep(1.0)  # ten retry periods: an orphan would have tried again
        assert len(receiver.at("/down")) == attempts
    finally:
        node.kill()
        node.wait(10)
