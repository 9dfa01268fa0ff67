"""One node's security policy, parsed once from settings and shared by every transport.

Every edge asks the same questions here — who is this token, may this API key do that, is this
Origin allowed, where does this request come from, may this peer open another connection — so
all transports answer them alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tidings.auth.apikeys import ApiKeyRing, Scope
from tidings.auth.limits import ConnectionLease, ConnectionLimiter, TrustedProxies, client_address
from tidings.auth.origins import CorsPolicy, OriginPolicy
from tidings.auth.tokens import TokenVerifier
from tidings.core.permissions import Credentials
from tidings.exceptions import Unauthorized

__all__ = ["Security", "header"]

RawHeaders = Iterable[tuple[bytes, bytes]]


def header(headers: RawHeaders, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case) in raw ASGI headers."""
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


class Security:
    """Tokens, API keys, origins/CORS, client addresses and connection limits of one node."""

    def __init__(self, settings: Any) -> None:
        self.tokens = TokenVerifier.from_settings(settings)
        self.api_keys = ApiKeyRing.from_settings(settings)
        self.origins = OriginPolicy.from_settings(settings)
        self.cors = CorsPolicy.from_settings(settings)
        self.limiter = ConnectionLimiter.from_settings(settings)
        self.proxies = TrustedProxies.parse(settings.trusted_proxies)
        self.metrics_allow = TrustedProxies.parse(settings.metrics_allow)  # networks, same test

    def client_ip(self, scope: Mapping[str, Any]) -> str | None:
        """The client's address (X-Forwarded-For believed only from trusted proxies)."""
        return client_address(scope.get("client"), scope.get("headers", ()), self.proxies)

    def admit(self, scope: Mapping[str, Any], user: str) -> ConnectionLease:
        """Count a new connection of any transport (WebSocket, SSE, stream, poll) against its
        client address and ``user`` ("" when anonymous); raises RateLimited past a limit. The
        caller releases the lease when the connection ends, on every path."""
        return self.limiter.acquire(self.client_ip(scope) or "", user)

    async def credentials(self, token: str) -> Credentials:
        """The credentials of a connection token; raises Unauthorized / TokenExpired."""
        if not self.tokens.configured:
            raise Unauthorized(
                "this server verifies no tokens (no token_secret or [auth] key): connect without a token"
            )
        return await self.tokens.verify_connection(token)

    def check_api(self, scope: Mapping[str, Any], needed: Scope | None) -> str:
        """Allow a server API call (raises Unauthorized/Forbidden); returns the key's name.

        ``needed`` None: any configured key (the OpenAPI document and its browsable page)."""
        headers = scope.get("headers", ())
        return self.api_keys.check(header(headers, b"authorization"), needed, self.client_ip(scope), headers)

    def check_metrics(self, scope: Mapping[str, Any]) -> None:
        """Allow a ``/metrics`` scrape: from a ``metrics_allow`` network, else as a server API
        call with the ``read`` scope (raises Unauthorized/Forbidden)."""
        if self.metrics_allow.networks and self.client_ip(scope) in self.metrics_allow:
            return
        self.check_api(scope, "read")

    def origin_allowed(self, scope: Mapping[str, Any]) -> bool:
        headers = scope.get("headers", ())
        return self.origins.allowed(header(headers, b"origin"), header(headers, b"host"))
