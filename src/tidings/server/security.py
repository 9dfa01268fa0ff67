"""Credentials from tokens and API-key checks, as the server's edges need them.

The token rules (claims, algorithms, key types) live in :mod:`tidings.auth`; this module is the
one place the edges ask "who is this?" so every transport answers the same way.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping

import jwt

from tidings.core.permissions import Capability, Credentials
from tidings.exceptions import Forbidden, TokenExpired, Unauthorized
from tidings.settings import Settings

__all__ = ["bearer_token", "check_api_key", "credentials_from_token", "is_loopback_client"]

_CAPS = {c.value: c for c in Capability}


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, if any."""
    value = headers.get("authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization must be 'Bearer <token>'")
    return token.strip()


def credentials_from_token(settings: Settings, token: str) -> Credentials:
    """Verify a connection token (HS256 with ``token_secret``) and return its credentials."""
    if not settings.token_secret:
        raise Unauthorized("this server has no token_secret: connect without a token")
    try:
        claims = jwt.decode(token, settings.token_secret, algorithms=["HS256"],
                            options={"require": ["exp", "sub"]})
    except jwt.ExpiredSignatureError:
        raise TokenExpired("token expired") from None
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"invalid token: {exc}") from None
    grants: dict[str, frozenset[Capability]] = {}
    raw = claims.get("channels") or {}
    if not isinstance(raw, dict):
        raise Unauthorized("invalid token: channels must be an object")
    for pattern, caps in raw.items():
        if not isinstance(caps, list):
            raise Unauthorized("invalid token: channel grants must be lists")
        grants[str(pattern)] = frozenset(_CAPS[c] for c in caps if c in _CAPS)
    return Credentials(str(claims["sub"]), grants, float(claims["exp"]), claims.get("info"))


def is_loopback_client(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def check_api_key(settings: Settings, authorization: str | None, scope: str,
                  client_host: str | None) -> None:
    """Allow a server API call, or raise Unauthorized (401) / Forbidden (403).

    With no key configured, only loopback clients are allowed (DESIGN: open only on loopback).
    Keys are compared in constant time against every configured key.
    """
    keys = settings.api_key_scopes()
    if not keys:
        if is_loopback_client(client_host):
            return
        raise Unauthorized("no api_key is configured: the server API answers loopback only")
    presented = ""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer":
            presented = value.strip()
    if not presented:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <api key>'")
    found: frozenset[str] | None = None
    for key, scopes in keys.items():
        if hmac.compare_digest(key.encode(), presented.encode()):
            found = scopes
    if found is None:
        raise Unauthorized("wrong API key")
    if scope not in found:
        raise Forbidden(f"this API key lacks the {scope!r} scope")
