"""Applications, event types, app messages and portal tokens over loopback, on both webhook
stores (SQLite and Redis): a real tidings server, a real receiver, httpx."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from standardwebhooks import Webhook
from tests.redis_server import RedisServer, redis_available

from conftest import Hub, HubFactory, Receiver, status, wait_for
from tidings.client.api import AsyncServerAPI, ServerAPI
from tidings.exceptions import Conflict, NotFound, Unprocessable
from tidings.webhooks.redis_store import RedisWebhookStore
from tidings.webhooks.store import SQLiteWebhookStore

KEY = "apps-test-admin-key-0123456789"
ORDER_PAID = {
    "type": "object",
    "properties": {"order": {"type": "string"}, "amount": {"type": "integer", "minimum": 0}},
    "required": ["order", "amount"],
}


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    if not redis_available():
        pytest.skip("redis-server is not installed")
    with RedisServer() as server:
        yield server


@pytest.fixture(params=["sqlite", "redis"])
async def hub(request: pytest.FixtureRequest, make_hub: HubFactory) -> Hub:
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        with redis.Redis(port=server.port) as client:
            client.flushall()
        made = await make_hub({"store": ""}, broker=server.url, api_key=KEY)
        assert isinstance(made.server.service.store, RedisWebhookStore)
    else:
        made = await make_hub(api_key=KEY)
        assert isinstance(made.server.service.store, SQLiteWebhookStore)
    made.client.headers["Authorization"] = f"Bearer {KEY}"
    return made


async def call(hub: Hub, method: str, path: str, expect: int, token: str | None = None, **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await hub.client.request(method, path, headers=headers, **kw)
    assert response.status_code == expect, f"{method} {path}: {response.status_code} {response.text}"
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"code", "message"}
        return error
    return response.json() if response.content else None


async def new_app(hub: Hub, name: str, ident: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, **({"id": ident} if ident else {})}
    result: dict[str, Any] = await call(hub, "POST", "/api/webhooks/apps", 201, json=body)
    return result


async def portal_token(hub: Hub, app_id: str, **body: Any) -> str:
    answer = await call(hub, "POST", f"/api/webhooks/apps/{app_id}/portal", 200, json=body)
    assert answer["url"] == f"{hub.base_url}/portal#token={answer['token']}"
    token: str = answer["token"]
    return token


async def test_apps_are_created_read_listed_changed_and_deleted(hub: Hub) -> None:
    made = await call(
        hub,
        "POST",
        "/api/webhooks/apps",
        201,
        json={"id": "acme", "name": "Acme", "metadata": {"plan": "pro"}},
    )
    assert made["id"] == "acme" and made["metadata"] == {"plan": "pro"}
    generated = await new_app(hub, "Globex")
    assert generated["id"].startswith("app_")
    conflict = await call(hub, "POST", "/api/webhooks/apps", 409, json={"id": "acme", "name": "again"})
    assert conflict["code"] == "conflict"
    bad = await call(hub, "POST", "/api/webhooks/apps", 400, json={"id": "no spaces", "name": "x"})
    assert bad["code"] == "bad_request"
    await call(hub, "POST", "/api/webhooks/apps", 400, json={"metadata": {}})
    listed = await call(hub, "GET", "/api/webhooks/apps", 200)
    assert [a["id"] for a in listed["apps"]] == ["acme", generated["id"]]
    patched = await call(hub, "PATCH", "/api/webhooks/apps/acme", 200, json={"name": "Acme Corp"})
    assert patched["name"] == "Acme Corp" and patched["metadata"] == {"plan": "pro"}
    endpoint = await call(
        hub, "POST", "/api/webhooks/apps/acme/endpoints", 201, json={"url": "http://127.0.0.1:9/x"}
    )
    await call(hub, "DELETE", "/api/webhooks/apps/acme", 204)
    assert (await call(hub, "GET", "/api/webhooks/apps/acme", 404))["code"] == "not_found"
    await call(hub, "GET", f"/api/webhooks/{endpoint['id']}", 404)  # its endpoints went with it
    await call(hub, "GET", "/api/webhooks/apps/acme/endpoints", 404)


async def test_event_types_are_created_listed_archived_and_their_schemas_checked(hub: Hub) -> None:
    made = await call(
        hub,
        "POST",
        "/api/webhooks/event-types",
        201,
        json={"name": "order.paid", "description": "An order was paid", "schema": ORDER_PAID},
    )
    assert made["schema"] == ORDER_PAID and made["archived"] is False
    await call(hub, "POST", "/api/webhooks/event-types", 201, json={"name": "order.shipped"})
    await call(hub, "POST", "/api/webhooks/event-types", 409, json={"name": "order.paid"})
    bad = await call(
        hub, "POST", "/api/webhooks/event-types", 422, json={"name": "x.bad", "schema": {"type": "nope"}}
    )
    assert bad["code"] == "bad_request" and "not a valid JSON Schema" in bad["message"]
    remote = await call(
        hub,
        "POST",
        "/api/webhooks/event-types",
        422,
        json={"name": "x.remote", "schema": {"$ref": "http://169.254.169.254/latest/meta-data"}},
    )
    assert "another document" in remote["message"]
    await call(hub, "POST", "/api/webhooks/event-types", 400, json={"name": "has space"})

    names = await call(hub, "GET", "/api/webhooks/event-types", 200)
    assert [t["name"] for t in names["event_types"]] == ["order.paid", "order.shipped"]
    archived = await call(hub, "DELETE", "/api/webhooks/event-types/order.shipped", 200)
    assert archived["archived"] is True
    names = await call(hub, "GET", "/api/webhooks/event-types", 200)
    assert [t["name"] for t in names["event_types"]] == ["order.paid"]
    every = await call(hub, "GET", "/api/webhooks/event-types", 200, params={"include_archived": "true"})
    assert len(every["event_types"]) == 2
    back = await call(hub, "PATCH", "/api/webhooks/event-types/order.shipped", 200, json={"archived": False})
    assert back["archived"] is False
    await call(hub, "GET", "/api/webhooks/event-types/nothing.here", 404)

    await new_app(hub, "Acme", "acme")
    refused = await call(
        hub,
        "POST",
        "/api/webhooks/apps/acme/messages",
        422,
        json={"event_type": "order.paid", "payload": {"order": "o-1", "amount": "ten"}},
    )
    assert refused["code"] == "bad_request"
    assert "/amount" in refused["message"] and "integer" in refused["message"]
    missing = await call(
        hub, "POST", "/api/webhooks/apps/acme/messages", 422, json={"event_type": "order.paid", "payload": {}}
    )
    assert "order" in missing["message"]
    await call(
        hub,
        "POST",
        "/api/webhooks/apps/acme/messages",
        202,
        json={"event_type": "order.paid", "payload": {"order": "o-1", "amount": 10}},
    )
    # a schema changed later applies to the next messages at once
    await call(hub, "PATCH", "/api/webhooks/event-types/order.paid", 200, json={"schema": {"type": "string"}})
    await call(
        hub,
        "POST",
        "/api/webhooks/apps/acme/messages",
        422,
        json={"event_type": "order.paid", "payload": {"order": "o-1", "amount": 10}},
    )


async def test_a_message_reaches_the_apps_endpoints_that_take_its_type_signed(
    hub: Hub, receiver: Receiver
) -> None:
    await new_app(hub, "Acme", "acme")
    await new_app(hub, "Other", "other")
    paid_only = await call(
        hub,
        "POST",
        "/api/webhooks/apps/acme/endpoints",
        201,
        json={"url": receiver.on("/paid", status(200)), "event_types": ["order.paid"], "rate_limit": 5},
    )
    assert paid_only["rate_limit"] == 5 and paid_only["event_types"] == ["order.paid"]
    assert paid_only["channels"] == [] and paid_only["secret"].startswith("whsec_")
    every = await call(
        hub, "POST", "/api/webhooks/apps/acme/endpoints", 201, json={"url": receiver.on("/all", status(200))}
    )
    await call(
        hub,
        "POST",
        "/api/webhooks/apps/other/endpoints",
        201,
        json={"url": receiver.on("/other", status(200))},
    )
    # a channel publication reaches no app endpoint without channels
    await hub.publish("orders:1", {"n": 1})

    sent = await call(
        hub,
        "POST",
        "/api/webhooks/apps/acme/messages",
        202,
        json={"event_type": "order.paid", "payload": {"order": "o-1"}},
    )
    assert sent["id"].startswith("msg_") and sent["duplicate"] is False and len(sent["deliveries"]) == 2
    await call(
        hub,
        "POST",
        "/api/webhooks/apps/acme/messages",
        202,
        json={"event_type": "order.refunded", "payload": {"order": "o-1"}},
    )
    await wait_for(lambda: len(receiver.at("/all")) == 2 and len(receiver.at("/paid")) == 1)
    got = receiver.at("/paid")[0]
    assert got.webhook_id == sent["id"]
    verified = Webhook(paid_only["secret"]).verify(got.body, got.headers)
    assert verified["type"] == "order.paid" and verified["data"] == {"order": "o-1"}
    assert verified["timestamp"].endswith("Z")
    assert receiver.at("/other") == []

    detail = await call(hub, "GET", f"/api/webhooks/apps/acme/messages/{sent['id']}", 200)
    assert detail["body"] == got.body.decode()
    assert {a["endpoint_id"] for a in detail["attempts"]} == {paid_only["id"], every["id"]}
    listed = await call(hub, "GET", "/api/webhooks/apps/acme/messages", 200)
    assert [m["event_type"] for m in listed["messages"]] == ["order.refunded", "order.paid"]
    page = await call(
        hub,
        "GET",
        "/api/webhooks/apps/acme/messages",
        200,
        params={"before": listed["messages"][0]["created_at"]},
    )
    assert [m["id"] for m in page["messages"]] == [sent["id"]]
    await call(hub, "GET", "/api/webhooks/apps/other/messages/" + sent["id"], 404)
    await call(hub, "POST", "/api/webhooks/apps/nobody/messages", 404, json={"event_type": "a", "payload": 1})
    # the endpoint API shows which app an endpoint is in
    assert (await call(hub, "GET", f"/api/webhooks/{every['id']}", 200))["app_id"] == "acme"


async def test_the_same_idempotency_key_twice_makes_one_message(hub: Hub, receiver: Receiver) -> None:
    await new_app(hub, "Acme", "acme")
    await new_app(hub, "Other", "other")
    await call(
        hub, "POST", "/api/webhooks/apps/acme/endpoints", 201, json={"url": receiver.on("/a", status(200))}
    )
    body = {"event_type": "order.paid", "payload": {"n": 1}, "idempotency_key": "order-1-paid"}
    first, second = await asyncio.gather(
        call(hub, "POST", "/api/webhooks/apps/acme/messages", 202, json=body),
        call(hub, "POST", "/api/webhooks/apps/acme/messages", 202, json=body),
    )
    assert first["id"] == second["id"]
    assert sorted([first["duplicate"], second["duplicate"]]) == [False, True]
    third = await call(
        hub, "POST", "/api/webhooks/apps/acme/messages", 202, json={**body, "payload": {"n": "changed"}}
    )
    assert third["id"] == first["id"] and third["duplicate"] is True and third["payload"] == {"n": 1}
    # the key is per application
    elsewhere = await call(hub, "POST", "/api/webhooks/apps/other/messages", 202, json=body)
    assert elsewhere["id"] != first["id"] and elsewhere["duplicate"] is False
    marker = await call(
        hub, "POST", "/api/webhooks/apps/acme/messages", 202, json={"event_type": "done", "payload": None}
    )
    await wait_for(lambda: any(r.webhook_id == marker["id"] for r in receiver.at("/a")))
    await wait_for(lambda: len(receiver.at("/a")) >= 2)
    assert [r.webhook_id for r in receiver.at("/a")].count(first["id"]) == 1
    listed = await call(hub, "GET", "/api/webhooks/apps/acme/messages", 200)
    assert len(listed["messages"]) == 2


async def test_app_endpoints_are_edited_tested_replayed_and_rotated(hub: Hub, receiver: Receiver) -> None:
    await new_app(hub, "Acme", "acme")
    base = "/api/webhooks/apps/acme/endpoints"
    endpoint = await call(hub, "POST", base, 201, json={"url": receiver.on("/e", status(200))})
    patched = await call(
        hub,
        "PATCH",
        f"{base}/{endpoint['id']}",
        200,
        json={"event_types": ["webhook.test"], "description": "billing", "rate_limit": 2.5},
    )
    assert patched["event_types"] == ["webhook.test"] and patched["rate_limit"] == 2.5
    await call(hub, "PATCH", f"{base}/{endpoint['id']}", 400, json={"url": None})
    test = await call(hub, "POST", f"{base}/{endpoint['id']}/test", 202)
    await wait_for(lambda: len(receiver.at("/e")) == 1)
    assert receiver.at("/e")[0].json()["type"] == "webhook.test"

    async def succeeded() -> dict[str, Any]:
        deadline = time.monotonic() + 15
        while True:
            found = await call(hub, "GET", f"{base}/{endpoint['id']}/deliveries/{test['delivery_id']}", 200)
            if found["status"] == "succeeded" or time.monotonic() > deadline:
                return dict(found)
            await asyncio.sleep(0.02)

    detail = await succeeded()
    assert detail["attempt_log"][0]["status"] == 200 and detail["attempt_log"][0]["response"] == "status 200"
    assert detail["request"]["body"] == receiver.at("/e")[0].body.decode()
    assert detail["request"]["webhook_id"] == test["message_id"]
    replayed = await call(
        hub, "POST", f"{base}/{endpoint['id']}/replay", 200, json={"delivery_id": test["delivery_id"]}
    )
    assert replayed == {"replayed": 1}
    await wait_for(lambda: len(receiver.at("/e")) == 2)
    assert receiver.at("/e")[1].webhook_id == test["message_id"]
    rotated = await call(hub, "POST", f"{base}/{endpoint['id']}/rotate-secret", 200, json={"grace": 0})
    assert rotated["secret"] != endpoint["secret"]
    shown = await call(hub, "GET", f"{base}/{endpoint['id']}/secret", 200)
    assert shown["secret"] == rotated["secret"]
    await call(hub, "POST", f"{base}/{endpoint['id']}/test", 202)
    await wait_for(lambda: len(receiver.at("/e")) == 3)
    Webhook(rotated["secret"]).verify(receiver.at("/e")[2].body, receiver.at("/e")[2].headers)
    disabled = await call(hub, "PATCH", f"{base}/{endpoint['id']}", 200, json={"enabled": False})
    assert disabled["enabled"] is False
    await call(hub, "POST", f"{base}/{endpoint['id']}/test", 409)
    await call(hub, "DELETE", f"{base}/{endpoint['id']}", 204)
    await call(hub, "GET", f"{base}/{endpoint['id']}", 404)


async def test_a_portal_token_reaches_its_own_app_only(hub: Hub, receiver: Receiver) -> None:
    await new_app(hub, "Acme", "acme")
    await new_app(hub, "Globex", "globex")
    theirs = await call(
        hub, "POST", "/api/webhooks/apps/globex/endpoints", 201, json={"url": receiver.on("/g", status(200))}
    )
    sent = await call(
        hub, "POST", "/api/webhooks/apps/globex/messages", 202, json={"event_type": "a.b", "payload": 1}
    )
    await wait_for(lambda: len(receiver.at("/g")) == 1)
    token = await portal_token(hub, "acme")

    # its own app: read and manage its endpoints
    assert (await call(hub, "GET", "/api/webhooks/apps/acme", 200, token))["name"] == "Acme"
    mine = await call(
        hub,
        "POST",
        "/api/webhooks/apps/acme/endpoints",
        201,
        token,
        json={"url": receiver.on("/a", status(200))},
    )
    assert (await call(hub, "GET", "/api/webhooks/apps/acme/endpoints", 200, token))["endpoints"][0][
        "id"
    ] == mine["id"]
    await call(hub, "POST", f"/api/webhooks/apps/acme/endpoints/{mine['id']}/test", 202, token)
    await call(hub, "GET", "/api/webhooks/event-types", 200, token)

    # another app's routes: refused
    other = f"/api/webhooks/apps/globex/endpoints/{theirs['id']}"
    for method, path in [
        ("GET", "/api/webhooks/apps/globex"),
        ("GET", "/api/webhooks/apps/globex/endpoints"),
        ("GET", other),
        ("GET", other + "/secret"),
        ("GET", other + "/deliveries"),
        ("PATCH", other),
        ("DELETE", other),
        ("POST", other + "/rotate-secret"),
        ("POST", other + "/test"),
        ("POST", other + "/replay"),
        ("GET", other + f"/deliveries/{sent['deliveries'][0]}"),
        ("GET", "/api/webhooks/apps/globex/messages"),
        ("GET", f"/api/webhooks/apps/globex/messages/{sent['id']}"),
        ("POST", "/api/webhooks/apps/globex/endpoints"),
    ]:
        body = {"url": "http://127.0.0.1:9/"} if method == "POST" and path.endswith("endpoints") else {}
        error = await call(hub, method, path, 403, token, json=body if method != "GET" else None)
        assert error["code"] == "forbidden"
    # … nor through its own app's path
    for method, suffix in [
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("GET", "/deliveries"),
        ("POST", "/test"),
    ]:
        json = {} if method != "GET" else None
        await call(
            hub, method, f"/api/webhooks/apps/acme/endpoints/{theirs['id']}{suffix}", 404, token, json=json
        )
    await call(hub, "GET", f"/api/webhooks/apps/acme/messages/{sent['id']}", 404, token)
    # … nor the admin routes
    await call(hub, "GET", "/api/webhooks/apps", 403, token)
    await call(hub, "POST", "/api/webhooks/apps", 403, token, json={"name": "mine"})
    await call(hub, "DELETE", "/api/webhooks/apps/acme", 403, token)
    await call(hub, "POST", "/api/webhooks/apps/acme/portal", 403, token)
    await call(
        hub, "POST", "/api/webhooks/apps/acme/messages", 403, token, json={"event_type": "a", "payload": 1}
    )
    await call(hub, "POST", "/api/webhooks/event-types", 403, token, json={"name": "mine"})
    await call(hub, "PATCH", "/api/webhooks/apps/acme", 403, token, json={"name": "mine"})
    await call(hub, "POST", "/api/webhooks/event-types", 201, json={"name": "theirs"})
    await call(hub, "PATCH", "/api/webhooks/event-types/theirs", 403, token, json={"archived": True})
    await call(hub, "DELETE", "/api/webhooks/event-types/theirs", 403, token)
    await call(hub, "GET", "/api/webhooks/event-types/theirs", 200, token)
    their_delivery = f"/api/webhooks/apps/acme/endpoints/{theirs['id']}/deliveries/{sent['deliveries'][0]}"
    await call(hub, "GET", their_delivery, 404, token)
    await call(
        hub,
        "GET",
        f"/api/webhooks/apps/acme/endpoints/{mine['id']}/deliveries/{sent['deliveries'][0]}",
        404,
        token,
    )
    await call(
        hub,
        "POST",
        "/api/webhooks/apps/acme/endpoints",
        403,
        token,
        json={"url": mine["url"], "channels": ["*"]},
    )
    await call(
        hub, "PATCH", f"/api/webhooks/apps/acme/endpoints/{mine['id']}", 403, token, json={"channels": ["*"]}
    )
    assert (await call(hub, "GET", "/api/webhooks", 401, token))["code"] == "unauthorized"
    await call(hub, "GET", f"/api/webhooks/{theirs['id']}", 401, token)
    await call(hub, "GET", "/api/channels", 401, token)
    # a forged or tampered token
    await call(
        hub, "GET", "/api/webhooks/apps/acme", 401, token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    )
    await call(hub, "GET", "/api/webhooks/apps/acme", 401, "tdp_not.a.token")
    assert theirs["id"] in {e["id"] for e in (await call(hub, "GET", "/api/webhooks", 200))["webhooks"]}


async def test_a_read_only_or_expired_portal_token_is_refused(hub: Hub) -> None:
    await new_app(hub, "Acme", "acme")
    read_only = await portal_token(hub, "acme", read_only=True)
    await call(hub, "GET", "/api/webhooks/apps/acme/endpoints", 200, read_only)
    refused = await call(
        hub, "POST", "/api/webhooks/apps/acme/endpoints", 403, read_only, json={"url": "http://127.0.0.1:9/"}
    )
    assert "read-only" in refused["message"]
    await call(hub, "POST", "/api/webhooks/apps/acme/portal", 400, json={"expiry": 0})
    await call(hub, "POST", "/api/webhooks/apps/nobody/portal", 404)
    short = await portal_token(hub, "acme", expiry=3)  # 1 s: expired before its first use under load
    await call(hub, "GET", "/api/webhooks/apps/acme", 200, short)
    deadline = time.monotonic() + 15
    while True:  # the token's clock: wait for its second to pass
        answer = await hub.client.get("/api/webhooks/apps/acme", headers={"Authorization": f"Bearer {short}"})
        if answer.status_code != 200 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert answer.status_code == 401
    assert answer.json()["error"] == {
        "code": "unauthorized",
        "message": "this portal link has expired: ask the service that sent it for a new one",
    }


async def test_revoking_an_apps_portal_links_refuses_them_at_once_and_only_them(hub: Hub) -> None:
    await new_app(hub, "Acme", "acme")
    await new_app(hub, "Globex", "globex")
    old = await portal_token(hub, "acme")
    theirs = await portal_token(hub, "globex")
    await call(hub, "GET", "/api/webhooks/apps/acme/endpoints", 200, old)
    refused = await call(hub, "DELETE", "/api/webhooks/apps/acme/portal", 403, old)
    assert "admin API key" in refused["message"]  # a customer cannot revoke (or lock out) the links
    await call(hub, "DELETE", "/api/webhooks/apps/nobody/portal", 404)
    await call(hub, "DELETE", "/api/webhooks/apps/acme/portal", 204)
    for path in ("/api/webhooks/apps/acme", "/api/webhooks/apps/acme/endpoints"):
        revoked = await call(hub, "GET", path, 401, old)
        assert (
            revoked["message"] == "this portal link was revoked: ask the service that sent it for a new one"
        )
    fresh = await portal_token(hub, "acme")  # minted right after: works
    await call(hub, "GET", "/api/webhooks/apps/acme/endpoints", 200, fresh)
    await call(hub, "GET", "/api/webhooks/apps/globex/endpoints", 200, theirs)  # another app's: untouched


async def test_channel_endpoints_keep_working_beside_apps(hub: Hub, receiver: Receiver) -> None:
    await new_app(hub, "Acme", "acme")
    plain = await hub.create(receiver.on("/plain", status(200)), ["orders:*"])
    assert plain["app_id"] is None
    await call(hub, "POST", "/api/webhooks", 400, json={"url": receiver.url("/x"), "channels": []})
    # the provider may give an app endpoint channels too
    both = await call(
        hub,
        "POST",
        "/api/webhooks/apps/acme/endpoints",
        201,
        json={"url": receiver.on("/both", status(200)), "channels": ["orders:*"]},
    )
    assert both["channels"] == ["orders:*"]
    await hub.publish("orders:7", {"n": 7})
    await wait_for(lambda: len(receiver.at("/plain")) == 1 and len(receiver.at("/both")) == 1)
    assert receiver.at("/both")[0].json()["data"] == {"n": 7}


async def test_app_routes_need_the_admin_key(hub: Hub) -> None:
    async with httpx.AsyncClient(base_url=hub.base_url, timeout=10) as anonymous:
        answer = await anonymous.get("/api/webhooks/apps")
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthorized"
        answer = await anonymous.get("/api/webhooks/event-types")
        assert answer.status_code == 401


async def test_the_python_server_api_drives_apps_event_types_messages_and_portals(
    hub: Hub, receiver: Receiver
) -> None:
    async with AsyncServerAPI(hub.base_url, api_key=KEY) as api:
        await api.create_app("Acme", app_id="acme", metadata={"plan": "pro"})
        with pytest.raises(Conflict):
            await api.create_app("Acme", app_id="acme")
        assert [a["id"] for a in await api.apps()] == ["acme"]
        await api.create_event_type("order.paid", description="Paid", schema=ORDER_PAID)
        assert [t["name"] for t in await api.event_types()] == ["order.paid"]
        endpoint = await api.create_app_endpoint(
            "acme", receiver.on("/py", status(200)), event_types=["order.paid"], rate_limit=3
        )
        assert endpoint["rate_limit"] == 3
        with pytest.raises(Unprocessable, match="amount"):
            await api.send("acme", "order.paid", {"order": "o-1"})
        sent = await api.send("acme", "order.paid", {"order": "o-1", "amount": 5}, idempotency_key="k")
        again = await api.send("acme", "order.paid", {"order": "o-1", "amount": 5}, idempotency_key="k")
        assert again["id"] == sent["id"] and again["duplicate"] is True
        link = await api.portal("acme", expiry=60, read_only=True)
        assert link["url"].startswith(f"{hub.base_url}/portal#token=")
        await call(hub, "GET", "/api/webhooks/apps/acme", 200, link["token"])
        assert await api.revoke_portal("acme") is None
        await call(hub, "GET", "/api/webhooks/apps/acme", 401, link["token"])
    await wait_for(lambda: len(receiver.at("/py")) == 1)

    def sync() -> None:
        with ServerAPI(hub.base_url, api_key=KEY) as api:
            api.create_app("Globex", app_id="globex")
            api.create_app_endpoint("globex", receiver.url("/sync"), description="d")
            api.create_event_type("order.shipped")
            assert len(api.event_types(include_archived=True)) == 2
            assert api.send("globex", "order.shipped", [1, 2])["deliveries"]
            assert api.portal("globex")["app_id"] == "globex"
            api.revoke_portal("globex")
            with pytest.raises(NotFound):
                api.revoke_portal("nobody")
            assert {a["id"] for a in api.apps()} == {"acme", "globex"}
            with pytest.raises(NotFound):
                api.send("nobody", "x", 1)

    await asyncio.to_thread(sync)


async def test_what_cannot_be_stored_as_json_is_refused_not_a_server_error(hub: Hub) -> None:
    # found by the OpenAPI fuzz: an integer past 64 bits in metadata was a 500 from the store
    huge = 2**70
    answer = await call(hub, "POST", "/api/webhooks/apps", 400, json={"name": "x", "metadata": {"n": huge}})
    assert "metadata" in answer["message"] and answer["code"] == "bad_request"
    await new_app(hub, "Acme", "acme")
    await call(hub, "PATCH", "/api/webhooks/apps/acme", 400, json={"metadata": {"n": [huge]}})
    await call(
        hub, "POST", "/api/webhooks/event-types", 400, json={"name": "x.big", "schema": {"maximum": huge}}
    )
    await call(hub, "POST", "/api/webhooks/event-types", 201, json={"name": "x.any"})
    sent = {"event_type": "x.any", "payload": {"n": huge}}
    await call(hub, "POST", "/api/webhooks/apps/acme/messages", 400, json=sent)
