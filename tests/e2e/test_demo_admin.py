"""The server side of the demo pages and of the admin console, over loopback HTTP."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.serving import serve
from tidings.server.demo import RECEIVER, RECEIVER_CHANNEL, demo_settings
from tidings.settings import load_settings

KEY = "demo-admin-tests-key-0123456789"


def test_demo_settings_add_a_long_jobs_history_and_a_receiver_without_overriding_the_user() -> None:
    settings = demo_settings(load_settings(namespaces={"default": {"public": False}}))
    assert settings.namespaces["jobs"].history_size == 1000
    assert settings.namespaces["jobs"].public is False  # built on the user's default namespace
    receiver = settings.receivers[RECEIVER]
    assert (receiver.provider, receiver.channel) == ("standard", RECEIVER_CHANNEL)
    assert str(receiver.secret).startswith("whsec_")

    mine = load_settings(
        namespaces={"jobs": {"history_size": 5}},
        receivers={RECEIVER: {"provider": "hmac", "secret": "s" * 20, "channel": "mine"}},
    )
    kept = demo_settings(mine)
    assert kept.namespaces["jobs"].history_size == 5
    assert kept.receivers[RECEIVER].channel == "mine"


def test_a_demo_job_publishes_its_progress_to_its_channel() -> None:
    with serve() as server, httpx.Client(base_url=server.url, timeout=10) as http:
        job = http.post("/demo/jobs", json={"steps": 3, "interval": 0.02})
        assert job.status_code == 201
        body = job.json()
        assert body["channel"] == f"jobs:{body['id']}" and body["offset"] == 1
        deadline = time.monotonic() + 10
        events: list[str] = []
        while events[-1:] != ["done"] and time.monotonic() < deadline:
            history = http.get(f"/api/channels/{body['channel']}/history", params={"limit": 10})
            events = [p["event"] for p in history.json()["publications"]]
        assert events == ["started", "progress", "progress", "progress", "done"]


@pytest.mark.parametrize("body", [{"steps": 0}, {"steps": 201}, {"interval": "fast"}, {"steps": True}, [1]])
def test_a_demo_job_with_bad_parameters_is_refused(body: object) -> None:
    with serve() as server:
        answer = httpx.post(f"{server.url}/demo/jobs", json=body, timeout=10)
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "bad_request"


def test_demo_pages_are_served_only_with_demo_on_but_the_console_always() -> None:
    with serve() as server:
        for path in (
            "/",
            "/chat",
            "/ticker",
            "/progress",
            "/logs",
            "/webhooks",
            "/lab",
            "/admin",
            "/pages/style.css",
            "/pages/admin.js",
        ):
            assert httpx.get(server.url + path, timeout=10).status_code == 200, path
    with serve(demo=False) as server:
        assert httpx.get(f"{server.url}/", timeout=10).status_code == 404
        assert httpx.post(f"{server.url}/demo/jobs", timeout=10).status_code == 404
        assert httpx.get(f"{server.url}/admin", timeout=10).status_code == 200


def test_admin_endpoints_need_the_admin_scope() -> None:
    keys = [{"key": "reader-key-0123456789", "scopes": ["read"]}]
    with serve(api_key=KEY, api_keys=keys) as server, httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.get("/api/admin/auth").json() == {"key_required": True}
        assert http.get("/api/admin/snapshot").status_code == 401
        reader = {"Authorization": "Bearer reader-key-0123456789"}
        assert http.get("/api/admin/snapshot", headers=reader).status_code == 403
        answer = http.get("/api/admin/snapshot", headers={"Authorization": f"Bearer {KEY}"})
        assert answer.status_code == 200
        snapshot = answer.json()
        assert snapshot["nodes"][0]["broker"] == "memory"
        assert {"channels", "features", "time"} <= set(snapshot)
        assert http.get("/api/admin/snapshot", params={"key": KEY}).status_code == 200


def test_admin_stream_sends_a_stats_snapshot_every_second() -> None:
    with serve() as server, httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.get("/api/admin/auth").json() == {"key_required": False}
        http.post("/api/publish", json={"channel": "rates:a", "data": 1}).raise_for_status()
        with http.stream("GET", "/api/admin/stream") as answer:
            assert answer.headers["content-type"].startswith("text/event-stream")
            events = []
            for line in answer.iter_lines():
                if line.startswith("data: "):
                    events.append(line)
                if len(events) == 2:
                    break
        assert '"rates:a"' in events[1]
