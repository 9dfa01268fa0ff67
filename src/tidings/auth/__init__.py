"""Security and limits: tokens, server API keys, the Origin check and CORS, rate and connections.

Everything here decides; nothing here does I/O except the JWKS fetch of
:class:`~tidings.auth.tokens.JWKSCache`. See docs/topics/security.md for the threat model.
The CLI pieces live in :mod:`tidings.auth.cli` (imported on demand, so servers need no typer).
"""

from tidings.auth.apikeys import ApiKeyRing, bearer_token, check_api_key
from tidings.auth.limits import (
    ConnectionLease,
    ConnectionLimiter,
    TokenBucket,
    TrustedProxies,
    client_address,
    is_loopback_address,
)
from tidings.auth.origins import CorsPolicy, OriginPolicy, Preflight, origin_allowed
from tidings.auth.tokens import (
    JWKSCache,
    SubscriptionGrant,
    TokenVerifier,
    VerificationKey,
    mint_token,
)

__all__ = [
    "ApiKeyRing",
    "ConnectionLease",
    "ConnectionLimiter",
    "CorsPolicy",
    "JWKSCache",
    "OriginPolicy",
    "Preflight",
    "SubscriptionGrant",
    "TokenBucket",
    "TokenVerifier",
    "TrustedProxies",
    "VerificationKey",
    "bearer_token",
    "check_api_key",
    "client_address",
    "is_loopback_address",
    "mint_token",
    "origin_allowed",
]
