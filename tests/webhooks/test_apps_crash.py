"""Durability of app messages: a server killed with SIGKILL while an app's deliveries are pending
delivers them all after a restart, and keeps its apps, messages, idempotency keys and the
portal tokens it minted."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from test_crash import start_server, wait_ready

from conftest import FAST_WEBHOOKS, Receiver, free_port

MESSAGES = 40


@pytest.mark.slow
async def test_kill_9_with_app_messages_pending_then_restart_delivers_them_all(
    tmp_path: Path, receiver: Receiver
) -> None:
    settings_file = tmp_path / "settings.json"
    # Retries 2 s apart, 15 of them: none runs out (and fails for good) while a loaded machine
    # is still sending the messages before the kill.
    settings_file.write_text(
        json.dumps(
            {
                "webhooks": {
                    **FAST_WEBHOOKS,
                    "store": str(tmp_path / "queue.db"),
                    "retry_schedule": [2.0] * 15,
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
            assert (
                await client.post("/api/webhooks/apps", json={"id": "acme", "name": "Acme"})
            ).status_code == 201
            made = await client.post("/api/webhooks/apps/acme/endpoints", json={"url": url})
            assert made.status_code == 201
            sent = []
            for n in range(MESSAGES):
                answer_ = await client.post(
                    "/api/webhooks/apps/acme/messages",
                    json={"event_type": "order.paid", "payload": {"n": n}, "idempotency_key": f"k{n}"},
                )
                assert answer_.status_code == 202
                sent.append(answer_.json()["id"])
            token = (await client.post("/api/webhooks/apps/acme/portal", json={})).json()["token"]
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)

        accepting = True
        process = start_server(settings_file, port)
        await wait_ready(base, process)
        deadline = time.monotonic() + 30
        while len(accepted) < MESSAGES:
            assert time.monotonic() < deadline, len(accepted)
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            again = await client.post(
                "/api/webhooks/apps/acme/messages",
                json={"event_type": "order.paid", "payload": {"n": 0}, "idempotency_key": "k0"},
            )
            assert again.json()["duplicate"] is True and again.json()["id"] == sent[0]
            listed = await client.get("/api/webhooks/apps/acme/messages", params={"limit": 1000})
            assert {m["id"] for m in listed.json()["messages"]} == set(sent)
            mine = await client.get(
                "/api/webhooks/apps/acme/endpoints", headers={"Authorization": f"Bearer {token}"}
            )
            assert mine.status_code == 200 and [e["url"] for e in mine.json()["endpoints"]] == [url]
    finally:
        process.kill()
        process.wait(10)

    by_id: dict[str, set[bytes]] = {}
    for got in receiver.at("/sink"):
        by_id.setdefault(got.webhook_id, set()).add(got.body)
    assert set(by_id) == set(sent) == accepted
    assert all(len(bodies) == 1 for bodies in by_id.values())  # a retry sends the same bytes
    assert sorted(json.loads(next(iter(b)))["data"]["n"] for b in by_id.values()) == list(range(MESSAGES))
