"""Server API keys: scopes, constant-time comparison, and the loopback-only open mode."""

from __future__ import annotations

import contextlib
import hmac
from typing import Any

import pytest

from tidings.auth.apikeys import ApiKeyRing, bearer_token, check_api_key
from tidings.exceptions import Forbidden, Unauthorized
from tidings.settings import Settings, load_settings

ALL = "k-all-" + "a" * 20
PUBLISHER = "k-pub-" + "b" * 20
READER = "k-read-" + "c" * 20
ADMIN = "k-admin-" + "d" * 20


def keyed() -> Settings:
    return load_settings(
        api_key=ALL,
        api_keys=[
            {"key": PUBLISHER, "scopes": ["publish"], "name": "publisher"},
            {"key": READER, "scopes": ["read"]},
            {"key": ADMIN, "scopes": ["admin"]},
        ],
    )


@pytest.mark.parametrize(
    ("key", "scope"),
    [
        (ALL, "publish"), (ALL, "read"), (ALL, "admin"),
        (PUBLISHER, "publish"), (READER, "read"),
        (ADMIN, "publish"), (ADMIN, "read"), (ADMIN, "admin"),
    ],
)  # fmt: skip
def test_a_key_with_the_scope_passes_from_anywhere(key: str, scope: Any) -> None:
    check_api_key(keyed(), f"Bearer {key}", scope, "203.0.113.1")


@pytest.mark.parametrize(
    ("key", "scope"),
    [(PUBLISHER, "read"), (READER, "publish"), (READER, "admin"), (PUBLISHER, "admin")],
)
def test_a_key_without_the_scope_is_forbidden(key: str, scope: Any) -> None:
    with pytest.raises(Forbidden, match=f"lacks the '{scope}' scope") as info:
        check_api_key(keyed(), f"Bearer {key}", scope, "127.0.0.1")
    assert info.value.http_status == 403


@pytest.mark.parametrize(
    ("header", "match"),
    [
        (None, "missing API key"),
        ("", "missing API key"),
        ("Bearer", "missing API key"),
        (f"Basic {ALL}", "missing API key"),
        ("Bearer wrong-key-wrong-key-wrong", "invalid API key"),
        (f"Bearer {ALL}x", "invalid API key"),
        (f"Bearer {ALL[:-1]}", "invalid API key"),
    ],
)
def test_a_missing_or_wrong_key_is_unauthorized(header: str | None, match: str) -> None:
    with pytest.raises(Unauthorized, match=match) as info:
        check_api_key(keyed(), header, "read", "127.0.0.1")
    assert info.value.http_status == 401
    assert info.value.code == "unauthorized"


def test_loopback_does_not_bypass_a_configured_key() -> None:
    with pytest.raises(Unauthorized):
        check_api_key(keyed(), None, "read", "127.0.0.1")


def test_the_bearer_scheme_is_case_insensitive_and_spaces_are_trimmed() -> None:
    check_api_key(keyed(), f"bearer   {ALL} ", "admin", None)
    assert bearer_token(f"BEARER {ALL}") == ALL
    assert bearer_token("Token abc") is None


def test_every_configured_key_is_compared_whichever_matches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(len(a) + len(b))
        return bool(real(a, b))

    monkeypatch.setattr(hmac, "compare_digest", counting)  # apikeys calls hmac.compare_digest
    ring = ApiKeyRing.from_settings(keyed())
    for key in (PUBLISHER, ADMIN, ALL, "no-such-key-at-all"):
        calls.clear()
        with contextlib.suppress(Unauthorized):
            ring.check(f"Bearer {key}", "publish", None)
        # one comparison per key, always of equal-length digests: no early exit, no length leak
        assert calls == [64, 64, 64, 64]


def test_check_returns_the_key_name_for_logs() -> None:
    ring = ApiKeyRing.from_settings(keyed())
    assert ring.check(f"Bearer {PUBLISHER}", "publish", None) == "publisher"
    assert ring.check(f"Bearer {ALL}", "publish", None) == "api_key"


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "127.0.0.2", "::ffff:127.0.0.1", "localhost"])
def test_without_keys_loopback_clients_are_let_in(host: str) -> None:
    check_api_key(load_settings(), None, "admin", host)
    check_api_key(load_settings(), "Bearer anything", "admin", host)


@pytest.mark.parametrize("host", ["10.0.0.1", "203.0.113.5", "::", None, ""])
def test_without_keys_other_clients_are_forbidden_with_a_hint(host: str | None) -> None:
    with pytest.raises(Forbidden, match=r"open only to loopback clients.*set api_key"):
        check_api_key(load_settings(), None, "read", host)


@pytest.mark.parametrize(
    "headers",
    [
        [(b"x-forwarded-for", b"203.0.113.5")],
        [(b"Forwarded", b"for=203.0.113.5")],
        {"X-Real-IP": "203.0.113.5"},
    ],
)
def test_without_keys_a_proxied_loopback_request_is_forbidden(headers: Any) -> None:
    with pytest.raises(Forbidden, match="through a proxy"):
        check_api_key(load_settings(), None, "read", "127.0.0.1", headers)
    check_api_key(load_settings(), None, "read", "127.0.0.1", [(b"host", b"x")])


def test_settings_keep_api_key_scopes_consistent_with_the_ring() -> None:
    settings = keyed()
    assert settings.api_key_scopes()[ALL] == frozenset({"publish", "read", "admin"})
    assert ApiKeyRing({PUBLISHER: ["publish"]}).configured
    assert not ApiKeyRing.from_settings(load_settings()).configured
