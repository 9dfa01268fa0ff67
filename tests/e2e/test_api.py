"""The server API over HTTP: shapes, errors, keys, limits, OpenAPI."""

from __future__ import annotations

import time

import httpx
import jwt
import pytest
from websockets.exceptions import ConnectionClosed

from tests.serving import RunningServer, serve
from tests.wsclient import WS

KEY = "k" * 32


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"]["code"] == code and body["error"]["message"]


async def test_publish_broadcast_history_channels_and_info(server: RunningServer):
    async with httpx.AsyncClient(base_url=server.url) as c:
        r = await c.post("/api/publish", json={"channel": "a", "data": {"x": 1}, "event": "e"})
        assert r.status_code == 200 and r.json()["offset"] == 1
        r = await c.post("/api/broadcast", json={"channels": ["a", "b"], "data": 2})
        assert [x["offset"] for x in r.json()["results"]] == [2, 1]
        r = await c.get("/api/channels/a/history")
        body = r.json()
        assert [p["data"] for p in body["publications"]] == [{"x": 1}, 2]
        assert body["offset"] == 2 and body["gap"] is None
        r = await c.get("/api/channels/a/history", params={"since": 1})
        assert [p["offset"] for p in r.json()["publications"]] == [2]
        r = await c.get("/api/channels/a/history", params={"limit": 1})
        assert [p["offset"] for p in r.json()["publications"]] == [2]
        names = {ch["name"]: ch for ch in (await c.get("/api/channels")).json()["channels"]}
        assert names["a"]["offset"] == 2 and names["b"]["offset"] == 1
        info = (await c.get("/api/info")).json()
        assert info["publications"] == 3 and info["broker"] == "memory"


async def test_history_since_older_than_the_window_reports_a_gap(server: RunningServer):
    async with httpx.AsyncClient(base_url=server.url) as c:
        for i in range(6):
            await c.post("/api/publish", json={"channel": "tiny:h", "data": i})
        body = (await c.get("/api/channels/tiny:h/history", params={"since": 1})).json()
    assert body["gap"] == {"channel": "tiny:h", "epoch": body["epoch"], "requested": 2, "available_from": 4}
    assert [p["offset"] for p in body["publications"]] == [4, 5, 6]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("POST", "/api/publish", {"channel": "bad name", "data": 1}, 400, "bad_request"),
        ("POST", "/api/publish", {"channel": "a"}, 400, "bad_request"),
        ("POST", "/api/publish", {"channel": "a", "data": 1, "extra": 1}, 400, "bad_request"),
        ("POST", "/api/publish", {"channel": "a", "data": 1, "event": "bad event"}, 400, "bad_request"),
        ("POST", "/api/broadcast", {"channels": [], "data": 1}, 400, "bad_request"),
        ("GET", "/api/channels/a/history?limit=0", None, 400, "bad_request"),
        ("GET", "/api/nope", None, 404, "not_found"),
        ("GET", "/api/publish", None, 405, "bad_request"),
    ],
)
async def test_bad_requests_get_json_errors(
    server: RunningServer, method: str, path: str, body: object, status: int, code: str
):
    async with httpx.AsyncClient(base_url=server.url) as c:
        r = await c.request(method, path, json=body)
    assert_error(r, status, code)


async def test_malformed_json_body_is_a_bad_request(server: RunningServer):
    async with httpx.AsyncClient(base_url=server.url) as c:
        r = await c.post("/api/publish", content=b"{nope", headers={"content-type": "application/json"})
    assert_error(r, 400, "bad_request")


async def test_oversize_body_is_413():
    with serve(limits={"max_request_bytes": 2048}) as server:
        async with httpx.AsyncClient(base_url=server.url) as c:
            r = await c.post("/api/publish", json={"channel": "a", "data": "x" * 5000})
            assert_error(r, 413, "too_large")
            ok = await c.post("/api/publish", json={"channel": "a", "data": "x"})
            assert ok.status_code == 200


async def test_configured_api_key_is_required_even_on_loopback():
    with serve(api_key=KEY, api_keys=[{"key": "r" * 32, "scopes": ["read"]}]) as server:
        async with httpx.AsyncClient(base_url=server.url) as c:
            body = {"channel": "a", "data": 1}
            assert_error(await c.post("/api/publish", json=body), 401, "unauthorized")
            wrong = {"Authorization": "Bearer " + "w" * 32}
            assert_error(await c.post("/api/publish", json=body, headers=wrong), 401, "unauthorized")
            reader = {"Authorization": "Bearer " + "r" * 32}
            assert_error(await c.post("/api/publish", json=body, headers=reader), 403, "forbidden")
            assert (await c.get("/api/info", headers=reader)).status_code == 200
            good = {"Authorization": f"Bearer {KEY}"}
            assert (await c.post("/api/publish", json=body, headers=good)).status_code == 200


async def test_metrics_and_the_api_description_follow_the_api_key():
    reader = {"Authorization": "Bearer " + "r" * 32}
    publisher = {"Authorization": "Bearer " + "p" * 32}
    keys = [{"key": "r" * 32, "scopes": ["read"]}, {"key": "p" * 32, "scopes": ["publish"]}]
    with serve(api_key=KEY, api_keys=keys) as server:
        async with httpx.AsyncClient(base_url=server.url) as c:
            for path in ("/metrics", "/api/docs", "/api/openapi.json"):
                assert_error(await c.get(path), 401, "unauthorized")
                assert_error(
                    await c.get(path, headers={"Authorization": "Bearer " + "w" * 32}), 401, "unauthorized"
                )
                assert (await c.get(path, headers=reader)).status_code == 200, path
            metrics = await c.get("/metrics", headers=reader)
            assert "tidings_connections" in metrics.text
            # the API's description is for any key holder; the numbers need the read scope
            assert (await c.get("/api/openapi.json", headers=publisher)).json()["paths"]
            assert_error(await c.get("/metrics", headers=publisher), 403, "forbidden")
    # a scraper's network may be let in without a key; the API's description still needs one
    with serve(api_key=KEY, metrics_allow=["127.0.0.0/8"]) as server:
        async with httpx.AsyncClient(base_url=server.url) as c:
            assert "tidings_connections" in (await c.get("/metrics")).text
            assert_error(await c.get("/api/openapi.json"), 401, "unauthorized")
    with serve(api_key=KEY, metrics_allow=["10.0.0.0/8"]) as server:
        async with httpx.AsyncClient(base_url=server.url) as c:
            assert_error(await c.get("/metrics"), 401, "unauthorized")


async def test_without_a_key_metrics_are_for_loopback_clients_no_proxy_relayed():
    with serve() as server:
        async with httpx.AsyncClient(base_url=server.url) as c:
            assert (await c.get("/metrics")).status_code == 200
            assert (await c.get("/api/openapi.json")).status_code == 200
            relayed = {"X-Forwarded-For": "203.0.113.9"}
            for path in ("/metrics", "/api/docs", "/api/openapi.json"):
                assert_error(await c.get(path, headers=relayed), 403, "forbidden")


async def test_disconnect_closes_every_connection_of_a_user():
    secret = "s" * 32
    token = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, secret, algorithm="HS256")
    with serve(token_secret=secret) as server:
        async with (
            await WS.open(f"{server.ws_url}?token={token}") as ws,
            await WS.open(server.ws_url) as anonymous,
        ):
            connected = await ws.request("connect", token=token)
            assert connected["user"] == "alice"
            async with httpx.AsyncClient(base_url=server.url) as c:
                r = await c.post("/api/disconnect", json={"user": "alice"})
                assert r.json() == {"disconnected": 1}
                assert_error(await c.post("/api/disconnect", json={"user": ""}), 400, "bad_request")
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.conn.close_code == 1008
            assert (await anonymous.request("ping"))["op"] == "pong"


async def test_openapi_document_describes_the_api(server: RunningServer):
    async with httpx.AsyncClient(base_url=server.url) as c:
        doc = (await c.get("/api/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    assert {"/publish", "/broadcast", "/channels", "/info"} <= set(doc["paths"])
    assert doc["servers"] == [{"url": "/api"}]


async def test_health_endpoints(server: RunningServer):
    async with httpx.AsyncClient(base_url=server.url) as c:
        assert (await c.get("/healthz")).json() == {"status": "ok"}
        assert (await c.get("/readyz")).json() == {"status": "ready"}
