"""Signing and verification against the standardwebhooks library and the providers' schemes."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from tidings.exceptions import BadRequest, Unauthorized
from tidings.webhooks.signing import (
    SigningKey,
    decode_secret,
    generate_secret,
    sign_standard,
    signature_header,
    stripe_signature_header,
    verify_standard,
    verify_stripe,
)


def test_our_signature_is_the_library_signature() -> None:
    secret = generate_secret()
    now = int(time.time())
    body = b'{"a": 1}'
    ours = sign_standard(secret, "msg_1", now, body)
    theirs = Webhook(secret).sign("msg_1", datetime.fromtimestamp(now, tz=UTC), body.decode())
    assert ours == theirs


def test_only_keys_still_valid_sign() -> None:
    old, new = generate_secret(), generate_secret()
    keys = [SigningKey(old, expires_at=100.0), SigningKey(new)]
    assert len(signature_header(keys, "m", 1, b"x", now=50.0).split()) == 2
    assert signature_header(keys, "m", 1, b"x", now=150.0) == sign_standard(new, "m", 1, b"x")


def test_verify_standard_accepts_any_of_several_signatures() -> None:
    secret = generate_secret()
    now = time.time()
    headers = {
        "webhook-id": "m",
        "webhook-timestamp": str(int(now)),
        "webhook-signature": "v1,bm9wZQ== " + sign_standard(secret, "m", int(now), b"b"),
    }
    assert verify_standard([secret], headers, b"b", now) == "m"
    with pytest.raises(Unauthorized):
        verify_standard([generate_secret()], headers, b"b", now)
    with pytest.raises(Unauthorized):
        verify_standard([secret], headers, b"b", now + 301)


def test_stripe_header_matches_the_documented_scheme() -> None:
    header = stripe_signature_header("whsec_x", b"{}", 1700000000)
    verify_stripe(["whsec_x"], {"Stripe-Signature": header + ",v0=zzz"}, b"{}", 1700000000)
    with pytest.raises(Unauthorized):
        verify_stripe(["whsec_x"], {"Stripe-Signature": header}, b"{}", 1700000000 + 301)


def test_a_secret_must_be_base64() -> None:
    with pytest.raises(BadRequest):
        decode_secret("whsec_***")
    assert len(decode_secret(generate_secret())) == 24
