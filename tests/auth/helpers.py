"""Helpers to build (and break) tokens; fixtures live in conftest.py."""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tidings.auth.tokens import mint_token

NOW = 1_800_000_000.0
SECRET = "a-test-secret-that-is-long-enough-0123456789"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid connection-token claims at NOW, with ``overrides`` (None deletes a claim)."""
    base: dict[str, Any] = {
        "sub": "42",
        "exp": NOW + 3600,
        "iat": NOW,
        "channels": {"chat:*": ["subscribe", "publish"], "news": ["subscribe"]},
        "info": {"name": "Ann"},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def pem_public(key: Any) -> bytes:
    return key.public_key().public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def jwk_of(private_key: Any, kid: str | None = None, **extra: Any) -> dict[str, Any]:
    """The public JWK of ``private_key`` (as an identity provider would publish it)."""
    from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

    public = private_key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
    if kid is not None:
        jwk["kid"] = kid
    jwk.update(extra)
    return dict(jwk)


def sign(payload: dict[str, Any], key: Any, alg: str = "HS256", kid: str | None = None) -> str:
    return mint_token(payload, key, algorithm=alg, kid=kid)
