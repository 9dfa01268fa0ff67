"""Outbound webhooks end to end: a real server, real receivers on loopback."""

from __future__ import annotations

import asyncio
import bisect
import time

import pytest
from standardwebhooks import Webhook
from starlette.requests import Request
from starlette.responses import Response

from conftest import Hub, HubFactory, Receiver, fail_then_succeed, hang, status, wait_for


async def test_every_delivery_verifies_with_standardwebhooks_before_and_after_rotation(
    hub: Hub, receiver: Receiver
) -> None:
    url = receiver.on("/ok", status(200))
    endpoint = await hub.create(url, ["orders:*"])
    old_secret = endpoint["secret"]
    assert old_secret.startswith("whsec_")
    published = await hub.publish("orders:1", {"n": 1})
    await wait_for(lambda: len(receiver.at("/ok")) == 1)
    first = receiver.at("/ok")[0]
    assert Webhook(old_secret).verify(first.body, first.headers) == {
        **published,
        "time": first.json()["time"],
        "event": "message",
        "data": {"n": 1},
    }

    rotated = await hub.client.post(f"/api/webhooks/{endpoint['id']}/rotate-secret")
    assert rotated.status_code == 200
    new_secret = rotated.json()["secret"]
    assert new_secret != old_secret
    await hub.publish("orders:2", {"n": 2})
    await wait_for(lambda: len(receiver.at("/ok")) == 2)
    second = receiver.at("/ok")[1]
    assert len(second.headers["webhook-signature"].split()) == 2
    for secret in (old_secret, new_secret):
        assert Webhook(secret).verify(second.body, second.headers)["data"] == {"n": 2}


async def test_rotation_with_zero_grace_signs_with_the_new_secret_only(hub: Hub, receiver: Receiver) -> None:
    endpoint = await hub.create(receiver.on("/ok", status(200)), ["a"])
    rotated = await hub.client.post(f"/api/webhooks/{endpoint['id']}/rotate-secret", json={"grace": 0})
    await hub.publish("a", 1)
    await wait_for(lambda: len(receiver.at("/ok")) == 1)
    got = receiver.at("/ok")[0]
    assert len(got.headers["webhook-signature"].split()) == 1
    Webhook(rotated.json()["secret"]).verify(got.body, got.headers)


async def test_a_receiver_failing_twice_gets_the_message_three_times_with_one_webhook_id(
    hub: Hub, receiver: Receiver
) -> None:
    endpoint = await hub.create(receiver.on("/flaky", fail_then_succeed(2)), ["c"])
    await hub.publish("c", "hello")
    await wait_for(lambda: len(receiver.at("/flaky")) == 3)
    ids = {r.webhook_id for r in receiver.at("/flaky")}
    assert len(ids) == 1
    for got in receiver.at("/flaky"):
        Webhook(endpoint["secret"]).verify(got.body, got.headers)

    async def succeeded() -> list[dict[str, object]]:
        return await hub.deliveries(endpoint["id"], "succeeded")

    deadline = time.monotonic() + 5
    while not await succeeded():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    delivery = (await succeeded())[0]
    assert delivery["webhook_id"] == ids.pop()
    assert delivery["attempts"] == 3
    # A listing leaves the log out (it showed "attempt_log": [] beside "attempts": 3); the
    # detail has it, and the listing's last_status is its end.
    assert "attempt_log" not in delivery
    assert delivery["last_status"] == 200
    detail = await hub.client.get(f"/api/webhooks/{endpoint['id']}/deliveries/{delivery['id']}")
    log = detail.json()["attempt_log"]
    assert [a["status"] for a in log] == [500, 500, 200]
    assert all(a["duration_ms"] >= 0 for a in log)


async def test_410_gone_disables_the_endpoint(hub: Hub, receiver: Receiver) -> None:
    endpoint = await hub.create(receiver.on("/gone", status(410)), ["c"])
    await hub.publish("c", 1)
    await wait_for(lambda: not hub.server.service.endpoints[endpoint["id"]].enabled)
    shown = (await hub.client.get(f"/api/webhooks/{endpoint['id']}")).json()
    assert shown["enabled"] is False
    assert "410" in shown["disabled_reason"]
    assert shown["secret"] is None
    assert len(receiver.at("/gone")) == 1
    failed = await hub.deliveries(endpoint["id"], "failed")
    assert len(failed) == 1
    # a disabled endpoint receives nothing new; enabling it again works
    await hub.publish("c", 2)
    patched = await hub.client.patch(f"/api/webhooks/{endpoint['id']}", json={"enabled": True})
    assert patched.json()["enabled"] is True
    assert patched.json()["disabled_reason"] is None


async def test_a_receiver_that_never_answers_is_timed_out_and_delays_no_other_endpoint(
    make_hub: HubFactory, receiver: Receiver
) -> None:
    hub = await make_hub({"timeout": 2.0})
    slow = await hub.create(receiver.on("/hang", hang(receiver.hold)), ["c"])
    await hub.create(receiver.on("/fast", status(204)), ["c"])
    for n in range(20):
        await hub.publish("c", n)
    await wait_for(lambda: len(receiver.at("/fast")) == 20)
    # every fast delivery arrived while the slow endpoint's first attempts are still hanging
    assert all(d["attempts"] == 0 for d in await hub.deliveries(slow["id"]))
    assert len(receiver.at("/hang")) <= 4  # its concurrency limit

    async def timed_out() -> bool:
        found = await hub.deliveries(slow["id"])
        return any(d["last_error"] and "timeout" in d["last_error"] for d in found)

    deadline = time.monotonic() + 10
    while not await timed_out():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def test_redirects_are_failures_and_are_not_followed(hub: Hub, receiver: Receiver) -> None:
    receiver.on("/target", status(200))
    endpoint = await hub.create(
        receiver.on("/moved", status(307, {"location": receiver.url("/target")})),
        ["c"],
    )
    await hub.publish("c", 1)
    await wait_for(lambda: len(receiver.at("/moved")) >= 2)
    assert receiver.at("/target") == []
    found = await hub.deliveries(endpoint["id"])
    assert found[0]["last_status"] == 307


async def test_exhausted_deliveries_are_failed_and_replay_delivers_them_with_the_same_id(
    make_hub: HubFactory, receiver: Receiver
) -> None:
    hub = await make_hub({"retry_schedule": [0.01, 0.01]})
    endpoint = await hub.create(receiver.on("/down", status(500)), ["c"])
    await hub.publish("c", 1)
    await hub.publish("c", 2)
    await wait_for(lambda: len(receiver.at("/down")) == 6)

    async def failed() -> list[dict[str, object]]:
        return await hub.deliveries(endpoint["id"], "failed")

    deadline = time.monotonic() + 5
    while len(await failed()) < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert await hub.deliveries(endpoint["id"], "succeeded") == []
    ids = {r.webhook_id for r in receiver.at("/down")}

    receiver.on("/down", status(200))
    one = (await failed())[0]
    replayed = await hub.client.post(
        f"/api/webhooks/{endpoint['id']}/replay", json={"delivery_id": one["id"]}
    )
    assert replayed.json() == {"replayed": 1}
    await wait_for(lambda: len(receiver.at("/down")) == 7)
    assert receiver.at("/down")[-1].webhook_id == one["webhook_id"]
    replayed = await hub.client.post(
        f"/api/webhooks/{endpoint['id']}/replay", json={"since": time.time() - 60}
    )
    assert replayed.json() == {"replayed": 1}
    await wait_for(lambda: len(receiver.at("/down")) == 8)
    assert {r.webhook_id for r in receiver.at("/down")} == ids


async def test_retry_after_is_honoured_after_a_429(make_hub: HubFactory, receiver: Receiver) -> None:
    hub = await make_hub({"retry_schedule": [0.01], "retry_after_max": 1.0})
    calls: list[float] = []

    async def answer(request: Request, count: int) -> Response:
        calls.append(time.monotonic())
        return Response(status_code=429 if count == 1 else 200, headers={"retry-after": "1"})

    await hub.create(receiver.on("/busy", answer), ["c"])
    await hub.publish("c", 1)
    await wait_for(lambda: len(calls) == 2)
    assert calls[1] - calls[0] >= 0.9


async def test_channel_patterns_and_the_event_filter_pick_the_endpoints(hub: Hub, receiver: Receiver) -> None:
    await hub.create(receiver.on("/all", status(200)), ["*"])
    await hub.create(receiver.on("/orders", status(200)), ["orders:*"])
    await hub.create(receiver.on("/paid", status(200)), ["orders:*"], events=["paid"])
    await hub.publish("orders:1", 1, event="created")
    await hub.publish("orders:2", 2, event="paid")
    await hub.publish("chat:x", 3)
    await wait_for(
        lambda: (
            len(receiver.at("/all")) == 3
            and len(receiver.at("/orders")) == 2
            and len(receiver.at("/paid")) == 1
        )
    )
    assert receiver.at("/paid")[0].json()["event"] == "paid"


async def test_strict_ordering_delivers_in_publish_order_despite_failures(
    hub: Hub, receiver: Receiver
) -> None:
    await hub.create(receiver.on("/ordered", fail_then_succeed(2)), ["c"], ordered=True)
    for n in range(5):
        await hub.publish("c", n)
    await wait_for(
        lambda: (
            len({r.webhook_id for r in receiver.at("/ordered")}) == 5 and len(receiver.at("/ordered")) == 7
        )
    )
    seen = [r.json()["data"] for r in receiver.at("/ordered")]
    assert seen == [0, 0, 0, 1, 2, 3, 4]


def most_in_one_second(times: list[float]) -> int:
    times = sorted(times)
    return max(bisect.bisect_left(times, t + 1.0, lo=i) - i for i, t in enumerate(times))


async def test_a_rate_limited_endpoint_gets_at_most_its_rate_in_any_second_and_everything(
    hub: Hub, receiver: Receiver
) -> None:
    limited = await hub.create(receiver.on("/limited", status(200)), ["c"], rate_limit=10)
    await hub.create(receiver.on("/free", status(200)), ["c"])
    for n in range(25):
        await hub.publish("c", n)
    # the unlimited endpoint beside it is not held back: all 25 before the limited one's 11th
    await wait_for(lambda: len(receiver.at("/free")) == 25)
    assert len(receiver.at("/limited")) <= 10
    await wait_for(lambda: len(receiver.at("/limited")) == 25)
    got = receiver.at("/limited")
    assert sorted(r.json()["data"] for r in got) == list(range(25))  # each once, none lost
    assert most_in_one_second([r.at for r in got]) <= 10
    assert got[-1].at - got[0].at >= 2.0  # 10, then 10 a second later, then 5
    # PATCH changes the limit (null: none) and the lane follows at once
    patched = await hub.client.patch(f"/api/webhooks/{limited['id']}", json={"rate_limit": None})
    assert patched.status_code == 200 and patched.json()["rate_limit"] is None
    for n in range(25, 45):
        await hub.publish("c", n)
    await wait_for(lambda: len(receiver.at("/limited")) == 45, within=5)
    refused = await hub.client.patch(f"/api/webhooks/{limited['id']}", json={"rate_limit": 0})
    assert refused.status_code in (400, 422)


async def test_a_hanging_and_a_failing_endpoint_do_not_hold_back_a_healthy_one(
    make_hub: HubFactory, receiver: Receiver
) -> None:
    hub = await make_hub({"timeout": 30.0, "retry_schedule": [0.01] * 5})
    await hub.create(receiver.on("/hangs", hang(receiver.hold)), ["c"])
    await hub.create(receiver.on("/fails", status(500)), ["c"])
    await hub.create(receiver.on("/healthy", status(200)), ["c"])
    for n in range(40):
        await hub.publish("c", n)
    await wait_for(lambda: len(receiver.at("/healthy")) == 40)
    assert len(receiver.at("/hangs")) == 4  # its concurrency limit: every slot still held
    assert len(receiver.at("/fails")) >= 40


async def test_endpoints_api_creates_lists_updates_tests_and_deletes(hub: Hub, receiver: Receiver) -> None:
    url = receiver.on("/api", status(200))
    created = await hub.create(url, ["a:*"], description="first")
    listed = (await hub.client.get("/api/webhooks")).json()["webhooks"]
    assert [e["id"] for e in listed] == [created["id"]]
    assert listed[0]["secret"] is None
    patched = await hub.client.patch(
        f"/api/webhooks/{created['id']}", json={"channels": ["b"], "description": "second"}
    )
    assert patched.json()["channels"] == ["b"]
    assert patched.json()["description"] == "second"
    tested = await hub.client.post(f"/api/webhooks/{created['id']}/test")
    assert tested.status_code == 202
    await wait_for(lambda: len(receiver.at("/api")) == 1)
    got = receiver.at("/api")[0]
    assert got.webhook_id == tested.json()["webhook_id"]
    assert got.json()["event"] == "webhook.test"
    disabled = await hub.client.patch(f"/api/webhooks/{created['id']}", json={"enabled": False})
    assert disabled.json()["enabled"] is False
    assert (await hub.client.post(f"/api/webhooks/{created['id']}/test")).status_code == 409
    assert (await hub.client.delete(f"/api/webhooks/{created['id']}")).status_code == 204
    missing = await hub.client.get(f"/api/webhooks/{created['id']}")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "body",
    [
        {"url": "ftp://example.com/", "channels": ["a"]},
        {"url": "http://127.0.0.1:1/", "channels": []},
        {"url": "http://127.0.0.1:1/", "channels": ["bad channel"]},
    ],
)
async def test_endpoints_api_refuses_bad_input(hub: Hub, body: dict[str, object]) -> None:
    response = await hub.client.post("/api/webhooks", json=body)
    assert response.status_code in (400, 422)
    assert response.json()["error"]["code"] == "bad_request"


async def test_the_concurrency_limit_caps_attempts_in_flight_per_endpoint(
    hub: Hub, receiver: Receiver
) -> None:
    await hub.create(receiver.on("/held", hang(receiver.hold)), ["c"], max_concurrency=2)
    for n in range(6):
        await hub.publish("c", n)
    await wait_for(lambda: len(receiver.at("/held")) == 2)
    await asyncio.sleep(0.2)  # give a third attempt the chance to (wrongly) start
    assert len(receiver.at("/held")) == 2


async def test_an_endpoint_failing_for_the_whole_window_is_disabled(
    make_hub: HubFactory, receiver: Receiver
) -> None:
    hub = await make_hub({"retry_schedule": [0.05] * 50, "disable_after": 0.3, "jitter": 0})
    endpoint = await hub.create(receiver.on("/broken", status(500)), ["c"])
    await hub.publish("c", 1)
    await wait_for(lambda: not hub.server.service.endpoints[endpoint["id"]].enabled)
    shown = (await hub.client.get(f"/api/webhooks/{endpoint['id']}")).json()
    assert shown["disabled_reason"].startswith("failing")
    assert len(receiver.at("/broken")) >= 4
