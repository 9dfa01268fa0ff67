"""Signing and verification: Standard Webhooks 1.0 (outbound and inbound), GitHub, Stripe, HMAC.

Pure functions: time is an argument, nothing is logged (secrets never reach a log line).

Standard Webhooks: the signed content is ``{webhook-id}.{webhook-timestamp}.{body}``, signed with
HMAC-SHA256 under the base64-decoded part of a ``whsec_`` secret; the header is
``webhook-signature: v1,<base64>`` and carries one signature per key that is still valid
(space-separated), so a receiver that knows either the old or the new secret verifies during a
rotation's grace period.

The verification scheme is always chosen by the caller (the receiver's provider), never guessed
from a secret's prefix: Stripe's ``whsec_`` secrets are used as raw bytes, Standard Webhooks'
are base64-decoded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from tidings.exceptions import BadRequest, Unauthorized

__all__ = [
    "SECRET_PREFIX",
    "SigningKey",
    "decode_secret",
    "generate_secret",
    "github_signature",
    "hmac_signature",
    "sign_standard",
    "signature_header",
    "stripe_signature_header",
    "valid_keys",
    "verify_github",
    "verify_hmac",
    "verify_standard",
    "verify_stripe",
]

SECRET_PREFIX = "whsec_"


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One secret of an endpoint; ``expires_at`` (Unix seconds) is set once it was rotated out."""

    secret: str
    expires_at: float | None = None

    def valid_at(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at


def generate_secret() -> str:
    """A new ``whsec_`` secret: 24 random bytes, base64."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(24)).decode()


def decode_secret(secret: str) -> bytes:
    """The key bytes of a Standard Webhooks secret (``whsec_`` prefix optional)."""
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("a whsec_ secret must be base64 after its prefix") from None
    if not key:
        raise BadRequest("empty webhook secret")
    return key


def sign_standard(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of id.timestamp.body>``."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(decode_secret(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def valid_keys(keys: Iterable[SigningKey], now: float) -> list[SigningKey]:
    return [key for key in keys if key.valid_at(now)]


def signature_header(keys: Iterable[SigningKey], msg_id: str, timestamp: int, body: bytes, now: float) -> str:
    """The ``webhook-signature`` value: one ``v1,…`` per key still valid at ``now``."""
    return " ".join(sign_standard(key.secret, msg_id, timestamp, body) for key in valid_keys(keys, now))


def _check_timestamp(timestamp: str | None, now: float, tolerance: float) -> int:
    try:
        value = int(timestamp or "")
    except ValueError:
        raise Unauthorized("missing or invalid signature timestamp") from None
    if abs(now - value) > tolerance:
        raise Unauthorized("signature timestamp outside the tolerance")
    return value


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


def verify_standard(
    secrets: Sequence[str], headers: Mapping[str, str], body: bytes, now: float, tolerance: float = 300.0
) -> str:
    """Verify a Standard Webhooks request; returns its ``webhook-id``. Raises Unauthorized."""
    lowered = _lower(headers)
    msg_id = lowered.get("webhook-id", "")
    signatures = lowered.get("webhook-signature", "")
    if not msg_id or not signatures:
        raise Unauthorized("missing webhook-id or webhook-signature")
    timestamp = _check_timestamp(lowered.get("webhook-timestamp"), now, tolerance)
    offered = [part.partition(",")[2] for part in signatures.split() if part.startswith("v1,")]
    for secret in secrets:
        expected = sign_standard(secret, msg_id, timestamp, body).partition(",")[2]
        if any(hmac.compare_digest(expected.encode(), sig.encode()) for sig in offered):
            return msg_id
    raise Unauthorized("no matching signature")


def github_signature(secret: str, body: bytes) -> str:
    """``X-Hub-Signature-256``: ``sha256=<hex HMAC-SHA256 of the body>`` (the secret as UTF-8)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_github(secrets: Sequence[str], headers: Mapping[str, str], body: bytes) -> None:
    offered = _lower(headers).get("x-hub-signature-256", "")
    if not offered.startswith("sha256="):
        raise Unauthorized("missing X-Hub-Signature-256")
    for secret in secrets:
        if hmac.compare_digest(github_signature(secret, body).encode(), offered.encode()):
            return
    raise Unauthorized("no matching signature")


def stripe_signature_header(secret: str, body: bytes, timestamp: int) -> str:
    """``Stripe-Signature: t=…,v1=…`` per Stripe's scheme (HMAC-SHA256 of ``t.body``, the
    secret's UTF-8 bytes as the key, hex)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_stripe(
    secrets: Sequence[str], headers: Mapping[str, str], body: bytes, now: float, tolerance: float = 300.0
) -> None:
    header = _lower(headers).get("stripe-signature", "")
    timestamp: str | None = None
    offered: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1":
            offered.append(value)
    if not offered:
        raise Unauthorized("missing Stripe-Signature v1")
    ts = _check_timestamp(timestamp, now, tolerance)
    for secret in secrets:
        expected = stripe_signature_header(secret, body, ts).partition(",v1=")[2]
        if any(hmac.compare_digest(expected.encode(), sig.encode()) for sig in offered):
            return
    raise Unauthorized("no matching signature")


def hmac_signature(secret: str, body: bytes, algorithm: str) -> str:
    return hmac.new(secret.encode(), body, algorithm).hexdigest()


def verify_hmac(
    secrets: Sequence[str], headers: Mapping[str, str], body: bytes, header: str, algorithm: str
) -> None:
    """Generic: ``header`` holds the hex HMAC of the body, optionally prefixed ``<algorithm>=``."""
    offered = _lower(headers).get(header.lower(), "").strip()
    offered = offered.removeprefix(f"{algorithm}=").lower()
    if not offered:
        raise Unauthorized(f"missing {header}")
    for secret in secrets:
        if hmac.compare_digest(hmac_signature(secret, body, algorithm).encode(), offered.encode()):
            return
    raise Unauthorized("no matching signature")
