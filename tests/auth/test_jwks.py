"""A JWKS served by a real HTTP server on loopback: caching, refresh on unknown kid, rate limit."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.auth.conftest import Keys
from tests.auth.helpers import NOW, claims, jwk_of, sign
from tidings.auth.tokens import JWKSCache, TokenVerifier
from tidings.exceptions import Unauthorized, Unavailable
from tidings.settings import load_settings


class JWKSServer:
    """Serves ``document`` at ``/jwks.json`` and counts requests; ``status`` simulates trouble."""

    def __init__(self) -> None:
        self.document: dict[str, Any] = {"keys": []}
        self.status = 200
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests += 1
                body = json.dumps(owner.document).encode()
                self.send_response(owner.status if self.path == "/jwks.json" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> JWKSServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def running_server() -> Iterator[JWKSServer]:
    with JWKSServer() as running:
        yield running


@pytest.fixture
def server(running_server: JWKSServer) -> JWKSServer:
    """The module's server, reset: no keys, status 200, no requests counted."""
    running_server.document = {"keys": []}
    running_server.status = 200
    running_server.requests = 0
    return running_server


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def verifier_for(url: str, clock: Clock, **options: Any) -> TokenVerifier:
    cache = JWKSCache(url, max_age=300, min_interval=30, timeout=5, **options)
    return TokenVerifier(jwks=cache, monotonic=clock)


async def test_first_token_fetches_the_jwks_and_later_ones_use_the_cache(
    server: JWKSServer, keys: Keys
) -> None:
    server.document = {"keys": [jwk_of(keys.rsa, "k1")]}
    verifier = verifier_for(server.url, Clock())
    for _ in range(3):
        creds = await verifier.verify_connection(sign(claims(), keys.rsa, "RS256", "k1"), now=NOW)
        assert creds.user == "42"
    assert server.requests == 1


async def test_unknown_kid_refreshes_once_then_is_rate_limited(server: JWKSServer, keys: Keys) -> None:
    clock = Clock()
    server.document = {"keys": [jwk_of(keys.rsa, "k1")]}
    verifier = verifier_for(server.url, clock)
    await verifier.verify_connection(sign(claims(), keys.rsa, "RS256", "k1"), now=NOW)

    # the provider rotates: k2 appears; a token naming k2 makes the hub refetch
    clock.now += 31
    server.document = {"keys": [jwk_of(keys.rsa, "k1"), jwk_of(keys.rsa2, "k2")]}
    creds = await verifier.verify_connection(sign(claims(), keys.rsa2, "RS256", "k2"), now=NOW)
    assert creds.user == "42"
    assert server.requests == 2

    # random kids within the refresh interval cost no fetch
    for kid in ("x1", "x2", "x3"):
        with pytest.raises(Unauthorized, match=f"no key with kid '{kid}'"):
            await verifier.verify_connection(sign(claims(), keys.rsa2, "RS256", kid), now=NOW)
    assert server.requests == 2

    # once the interval has passed, an unknown kid may refetch again
    clock.now += 30
    with pytest.raises(Unauthorized):
        await verifier.verify_connection(sign(claims(), keys.rsa2, "RS256", "x4"), now=NOW)
    assert server.requests == 3


async def test_a_stale_cache_is_refetched(server: JWKSServer, keys: Keys) -> None:
    clock = Clock()
    server.document = {"keys": [jwk_of(keys.ec, "e")]}
    verifier = verifier_for(server.url, clock)
    token = sign(claims(), keys.ec, "ES256", "e")
    await verifier.verify_connection(token, now=NOW)
    clock.now += 299
    await verifier.verify_connection(token, now=NOW)
    assert server.requests == 1
    clock.now += 1
    await verifier.verify_connection(token, now=NOW)
    assert server.requests == 2


async def test_concurrent_verifications_share_one_fetch(server: JWKSServer, keys: Keys) -> None:
    server.document = {"keys": [jwk_of(keys.rsa, "k1")]}
    verifier = verifier_for(server.url, Clock())
    token = sign(claims(), keys.rsa, "RS256", "k1")
    results = await asyncio.gather(*(verifier.verify_connection(token, now=NOW) for _ in range(5)))
    assert {c.user for c in results} == {"42"}
    assert server.requests == 1


async def test_an_unreachable_jwks_with_nothing_cached_is_unavailable_not_unauthorized(
    server: JWKSServer, keys: Keys
) -> None:
    server.status = 500
    verifier = verifier_for(server.url, Clock())
    with pytest.raises(Unavailable, match="retry") as info:
        await verifier.verify_connection(sign(claims(), keys.rsa, "RS256", "k1"), now=NOW)
    assert info.value.temporary
    assert verifier.jwks is not None
    assert "500" in (verifier.jwks.last_error or "")


async def test_a_failed_refresh_keeps_the_cached_keys(server: JWKSServer, keys: Keys) -> None:
    clock = Clock()
    server.document = {"keys": [jwk_of(keys.rsa, "k1")]}
    verifier = verifier_for(server.url, clock)
    token = sign(claims(), keys.rsa, "RS256", "k1")
    await verifier.verify_connection(token, now=NOW)
    server.status = 503
    clock.now += 400  # stale: a refetch is tried, fails, and the old keys still serve
    assert (await verifier.verify_connection(token, now=NOW)).user == "42"
    assert server.requests == 2


async def test_hs256_tokens_never_trigger_a_jwks_fetch(server: JWKSServer, keys: Keys) -> None:
    verifier = verifier_for(server.url, Clock())
    with pytest.raises(Unauthorized, match="no key configured for HS256"):
        await verifier.verify_connection(sign(claims(), "x" * 40), now=NOW)
    assert server.requests == 0


async def test_nowait_verification_answers_from_the_cache_only(server: JWKSServer, keys: Keys) -> None:
    server.document = {"keys": [jwk_of(keys.rsa, "k1")]}
    verifier = verifier_for(server.url, Clock())
    token = sign(claims(), keys.rsa, "RS256", "k1")
    with pytest.raises(Unauthorized, match="no key with kid"):
        verifier.verify_connection_nowait(token, now=NOW)
    assert server.requests == 0
    await verifier.verify_connection(token, now=NOW)
    assert verifier.verify_connection_nowait(token, now=NOW).user == "42"


async def test_subscription_tokens_use_the_jwks_too(server: JWKSServer, keys: Keys) -> None:
    server.document = {"keys": [jwk_of(keys.ec, "e")]}
    verifier = verifier_for(server.url, Clock())
    token = sign({"sub": "42", "channel": "room:1", "exp": NOW + 60}, keys.ec, "ES256", "e")
    grant = await verifier.verify_subscription(token, channel="room:1", user="42", now=NOW)
    assert grant.channel == "room:1"


async def test_verifier_from_settings_fetches_the_configured_jwks_url(server: JWKSServer, keys: Keys) -> None:
    server.document = {"keys": [jwk_of(keys.rsa, "k1")]}
    settings = load_settings(auth={"jwks_url": server.url, "issuer": "https://idp.test"})
    verifier = TokenVerifier.from_settings(settings)
    token = sign(claims(iss="https://idp.test"), keys.rsa, "RS256", "k1")
    assert (await verifier.verify_connection(token, now=NOW)).user == "42"


async def test_an_oversized_or_invalid_document_is_a_failed_fetch(server: JWKSServer, keys: Keys) -> None:
    server.document = {"keys": [{"kty": "RSA", "n": "A" * (1 << 20)}]}
    cache = JWKSCache(server.url, min_interval=0)
    assert not await cache.refresh(0.0)
    assert "1 MiB" in (cache.last_error or "")
    server.document = {"not": "jwks"}
    assert not await cache.refresh(1.0, force=True)
    assert "JWKS" in (cache.last_error or "")
