"""Inbound webhooks: payloads signed exactly as GitHub, Stripe and the standardwebhooks library
sign them are accepted and published; tampered, wrongly signed, stale and replayed ones are not."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from standardwebhooks import Webhook

from conftest import Hub, HubFactory

GITHUB_SECRET = "It's a Secret to Everybody"
STRIPE_SECRET = "whsec_stripe_test_secret_0123456789"
STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HMAC_SECRET = "generic-secret"

RECEIVERS: dict[str, Any] = {
    "github": {"provider": "github", "secret": GITHUB_SECRET, "channel": "github:{event}"},
    "stripe": {
        "provider": "stripe",
        "secret": ["whsec_old_one", STRIPE_SECRET],
        "channel": "stripe:{event}",
        "tolerance": 300,
    },
    "std": {"provider": "standard", "secret": STANDARD_SECRET, "channel": "std:{event}"},
    "generic": {
        "provider": "hmac",
        "secret": HMAC_SECRET,
        "channel": "generic:events",
        "header": "X-Signature",
        "algorithm": "sha256",
        "event_header": "X-Event",
        "id_header": "X-Delivery",
    },
}


@pytest.fixture
async def inbound(make_hub: HubFactory) -> Hub:
    return await make_hub(receivers=RECEIVERS, limits={"max_request_bytes": 4096})


async def history(hub: Hub, channel: str) -> list[dict[str, Any]]:
    pubs, _, _ = await hub.server.node.history(channel, None, 100)
    return [p.to_dict() for p in pubs]


def github_headers(
    body: bytes, secret: str = GITHUB_SECRET, event: str = "push", delivery: str | None = None
) -> dict[str, str]:
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-Hub-Signature-256": f"sha256={signature}",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "Content-Type": "application/json",
    }


def stripe_headers(body: bytes, secret: str = STRIPE_SECRET, at: int | None = None) -> dict[str, str]:
    # Stripe's documented scheme: HMAC-SHA256 over "{t}.{payload}", key = the secret string
    t = int(time.time()) if at is None else at
    signature = hmac.new(secret.encode("utf-8"), f"{t}.{body.decode()}".encode(), hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={t},v1={signature}", "Content-Type": "application/json"}


def standard_headers(
    body: bytes, secret: str = STANDARD_SECRET, msg_id: str | None = None, at: datetime | None = None
) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    when = at or datetime.now(tz=UTC)
    signature = Webhook(secret).sign(msg_id, when, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
        "Content-Type": "application/json",
    }


async def test_a_github_delivery_is_verified_and_published(inbound: Hub) -> None:
    body = json.dumps({"ref": "refs/heads/main", "commits": []}).encode()
    response = await inbound.client.post("/hooks/github", content=body, headers=github_headers(body))
    assert response.status_code == 200, response.text
    assert response.json()["channel"] == "github:push"
    published = await history(inbound, "github:push")
    assert [(p["event"], p["data"]) for p in published] == [("push", json.loads(body))]


async def test_a_stripe_event_is_verified_and_published(inbound: Hub) -> None:
    body = json.dumps(
        {"id": "evt_1", "type": "payment_intent.succeeded", "data": {"object": {"amount": 100}}}
    ).encode()
    response = await inbound.client.post("/hooks/stripe", content=body, headers=stripe_headers(body))
    assert response.status_code == 200, response.text
    published = await history(inbound, "stripe:payment_intent.succeeded")
    assert published[0]["event"] == "payment_intent.succeeded"
    assert published[0]["data"]["id"] == "evt_1"


async def test_a_standard_webhook_signed_by_the_library_is_verified_and_published(inbound: Hub) -> None:
    body = json.dumps({"type": "invoice.paid", "data": {"n": 1}}).encode()
    response = await inbound.client.post("/hooks/std", content=body, headers=standard_headers(body))
    assert response.status_code == 200, response.text
    assert (await history(inbound, "std:invoice.paid"))[0]["data"] == {
        "type": "invoice.paid",
        "data": {"n": 1},
    }


async def test_a_generic_hmac_delivery_is_verified_and_published(inbound: Hub) -> None:
    body = b'{"hello": "world"}'
    signature = hmac.new(HMAC_SECRET.encode(), body, hashlib.sha256).hexdigest()
    response = await inbound.client.post(
        "/hooks/generic",
        content=body,
        headers={"X-Signature": f"sha256={signature}", "X-Event": "greeting", "X-Delivery": "d1"},
    )
    assert response.status_code == 200, response.text
    assert (await history(inbound, "generic:events"))[0]["event"] == "greeting"


def tampered(body: bytes) -> bytes:
    return body.replace(b"1", b"2")


@pytest.mark.parametrize("name", ["github", "stripe", "std", "generic"])
async def test_a_tampered_body_is_refused_and_nothing_is_published(inbound: Hub, name: str) -> None:
    body = json.dumps({"id": "evt_1", "type": "t1", "n": 1}).encode()
    headers = {
        "github": lambda: github_headers(body),
        "stripe": lambda: stripe_headers(body),
        "std": lambda: standard_headers(body),
        "generic": lambda: {"X-Signature": hmac.new(HMAC_SECRET.encode(), body, hashlib.sha256).hexdigest()},
    }[name]()
    response = await inbound.client.post(f"/hooks/{name}", content=tampered(body), headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert inbound.server.node.publications == 0


@pytest.mark.parametrize(
    ("name", "headers"),
    [
        ("github", lambda body: github_headers(body, secret="wrong")),
        ("stripe", lambda body: stripe_headers(body, secret="whsec_wrong")),
        ("std", lambda body: standard_headers(body, secret="whsec_" + "A" * 32)),
        ("github", lambda body: {}),
        ("stripe", lambda body: {}),
        ("std", lambda body: {}),
        ("generic", lambda body: {}),
    ],
)
async def test_a_wrong_secret_or_a_missing_signature_is_refused(
    inbound: Hub, name: str, headers: Any
) -> None:
    body = json.dumps({"id": "evt_2", "type": "t"}).encode()
    response = await inbound.client.post(f"/hooks/{name}", content=body, headers=headers(body))
    assert response.status_code == 401
    assert inbound.server.node.publications == 0


async def test_a_stale_timestamp_is_refused(inbound: Hub) -> None:
    body = json.dumps({"id": "evt_3", "type": "t"}).encode()
    old = int(time.time()) - 3600
    response = await inbound.client.post("/hooks/stripe", content=body, headers=stripe_headers(body, at=old))
    assert response.status_code == 401
    response = await inbound.client.post(
        "/hooks/std", content=body, headers=standard_headers(body, at=datetime.fromtimestamp(old, tz=UTC))
    )
    assert response.status_code == 401
    assert inbound.server.node.publications == 0


async def test_a_replayed_delivery_id_is_deduplicated(inbound: Hub) -> None:
    body = json.dumps({"action": "opened"}).encode()
    headers = github_headers(body, event="issues", delivery="d-123")
    first = await inbound.client.post("/hooks/github", content=body, headers=headers)
    again = await inbound.client.post("/hooks/github", content=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json()["duplicate"] is True
    std_body = json.dumps({"type": "x"}).encode()
    std = standard_headers(std_body, msg_id="msg_fixed")
    await inbound.client.post("/hooks/std", content=std_body, headers=std)
    replayed = await inbound.client.post("/hooks/std", content=std_body, headers=std)
    assert replayed.json()["duplicate"] is True
    stripe_body = json.dumps({"id": "evt_same", "type": "charge.succeeded"}).encode()
    for _ in range(2):
        await inbound.client.post("/hooks/stripe", content=stripe_body, headers=stripe_headers(stripe_body))
    assert len(await history(inbound, "github:issues")) == 1
    assert len(await history(inbound, "std:x")) == 1
    assert len(await history(inbound, "stripe:charge.succeeded")) == 1


async def test_a_body_over_the_limit_is_413_and_an_unknown_receiver_404(inbound: Hub) -> None:
    body = json.dumps({"pad": "x" * 5000}).encode()
    response = await inbound.client.post("/hooks/github", content=body, headers=github_headers(body))
    assert response.status_code == 413
    assert (await inbound.client.post("/hooks/nobody", content=b"{}")).status_code == 404


async def test_the_scheme_follows_the_provider_not_the_secret_prefix(inbound: Hub) -> None:
    # a Standard Webhooks signature sent to the Stripe receiver (both use whsec_ secrets)
    body = json.dumps({"id": "evt_9", "type": "t"}).encode()
    headers = standard_headers(body, secret=STANDARD_SECRET)
    response = await inbound.client.post("/hooks/stripe", content=body, headers=headers)
    assert response.status_code == 401


def generic_headers(body: bytes, delivery: str) -> dict[str, str]:
    signature = hmac.new(HMAC_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {
        "X-Signature": f"sha256={signature}",
        "X-Event": "e",
        "X-Delivery": delivery,
        "Content-Type": "application/json",
    }


async def test_an_inbound_body_over_the_channel_limits_is_refused_before_it_is_acknowledged(
    make_hub: HubFactory,
) -> None:
    # The namespace's max_message_bytes and limits.max_json_depth hold for a webhook as for any
    # publish: refused (413 / 400) with nothing published, and the delivery id not remembered,
    # so the provider's retry is judged afresh rather than answered as a duplicate.
    hub = await make_hub(receivers=RECEIVERS, namespaces={"generic": {"max_message_bytes": 100}})
    big = json.dumps({"text": "x" * 200}).encode()
    refused = await hub.client.post("/hooks/generic", content=big, headers=generic_headers(big, "d-big"))
    assert refused.status_code == 413, refused.text
    assert refused.json()["error"]["code"] == "too_large"
    assert "100 bytes" in refused.json()["error"]["message"]
    deep = ("[" * 65 + "]" * 65).encode()
    too_deep = await hub.client.post("/hooks/generic", content=deep, headers=generic_headers(deep, "d-deep"))
    assert too_deep.status_code == 400, too_deep.text
    deepest = ("[" * 100_000 + "]" * 100_000).encode()  # deeper than the parser goes
    unparsable = await hub.client.post(
        "/hooks/generic", content=deepest, headers=generic_headers(deepest, "d-deepest")
    )
    assert unparsable.status_code == 400, unparsable.text
    assert "too deep" in unparsable.json()["error"]["message"]
    assert await history(hub, "generic:events") == []
    small = b'{"text": "ok"}'
    accepted = await hub.client.post("/hooks/generic", content=small, headers=generic_headers(small, "d-big"))
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["duplicate"] is False
    assert [p["data"] for p in await history(hub, "generic:events")] == [{"text": "ok"}]
