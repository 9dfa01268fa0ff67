"""The Origin check (CSWSH) and CORS headers."""

from __future__ import annotations

import pytest

from tidings.auth.origins import CorsPolicy, OriginPolicy, origin_allowed
from tidings.settings import SettingsError, load_settings

LIST = [
    "https://app.example.com",
    "http://localhost:3000",
    "https://*.example.org",
    "https://admin.example.net:8443",
]


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),  # not a browser: not refused
        ("https://app.example.com", True),
        ("HTTPS://App.Example.com", True),
        ("https://app.example.com:443", True),  # default port implied
        ("https://app.example.com/", True),
        ("http://app.example.com", False),  # other scheme
        ("https://app.example.com:8443", False),  # other port
        ("https://app.example.com.evil.test", False),
        ("https://evilapp.example.com", False),
        ("http://localhost:3000", True),
        ("http://localhost:3001", False),
        ("https://a.example.org", True),  # subdomain wildcard
        ("https://a.b.example.org", True),
        ("https://example.org", False),  # … not the bare domain
        ("https://badexample.org", False),
        ("http://a.example.org", False),
        ("https://a.example.org:444", False),
        ("https://admin.example.net:8443", True),
        ("https://admin.example.net", False),
        ("null", False),
        ("", False),
        ("not an origin", False),
        ("https://user@app.example.com", False),
        ("https://app.example.com/path", False),
    ],
)
def test_origin_against_an_allow_list(origin: str | None, allowed: bool) -> None:
    assert origin_allowed(load_settings(allowed_origins=LIST), origin) is allowed


def test_a_star_entry_allows_every_origin() -> None:
    settings = load_settings(allowed_origins=["*"])
    for origin in ("https://anything.test", "null", "http://127.0.0.1:9"):
        assert origin_allowed(settings, origin)


def test_null_is_allowed_only_when_listed() -> None:
    assert origin_allowed(load_settings(allowed_origins=["null"]), "null")
    assert not origin_allowed(load_settings(allowed_origins=["null"]), "https://a.test")


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        ("https://hub.example.com", "hub.example.com", True),  # same origin
        ("http://hub.example.com:8600", "hub.example.com:8600", True),
        ("http://hub.example.com:8600", "hub.example.com:8601", False),
        ("https://evil.test", "hub.example.com", False),  # cross-site: CSWSH refused
        ("https://evil.test", None, False),
        ("http://localhost:5173", "hub.example.com", True),  # a local dev front end
        ("http://127.0.0.1:8080", None, True),
        ("http://[::1]:8080", None, True),
        (None, None, True),
    ],
)
def test_without_an_allow_list_same_origin_and_loopback_pass(
    origin: str | None, host: str | None, allowed: bool
) -> None:
    assert origin_allowed(load_settings(), origin, host) is allowed


def test_an_allow_list_replaces_the_same_origin_rule() -> None:
    settings = load_settings(allowed_origins=["https://app.example.com"])
    assert not origin_allowed(settings, "https://hub.example.com", "hub.example.com")
    assert not origin_allowed(settings, "http://localhost:3000")


@pytest.mark.parametrize("entry", ["https://a.com/path", "a.com", "https://*a.com", "https://"])
def test_settings_refuse_malformed_allow_list_entries(entry: str) -> None:
    with pytest.raises(SettingsError, match="allowed_origins"):
        load_settings(allowed_origins=[entry])


def test_policy_refuses_malformed_entries_too() -> None:
    with pytest.raises(ValueError, match="not scheme"):
        OriginPolicy(["https://a.com/x"])


# ------------------------------------------------------------------------------------- CORS


def cors() -> CorsPolicy:
    return CorsPolicy.from_settings(load_settings(allowed_origins=LIST))


def test_an_allowed_origin_is_echoed_with_credentials_and_vary() -> None:
    headers = dict(cors().response_headers("https://app.example.com"))
    assert headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert headers["Vary"] == "Origin"
    assert "ETag" in headers["Access-Control-Expose-Headers"]


def test_a_star_list_still_echoes_the_origin_never_star() -> None:
    policy = CorsPolicy.from_settings(load_settings(allowed_origins=["*"]))
    headers = dict(policy.response_headers("https://x.test"))
    assert headers["Access-Control-Allow-Origin"] == "https://x.test"


@pytest.mark.parametrize("origin", [None, "https://evil.test"])
def test_no_cors_headers_without_an_allowed_origin_but_vary_always(origin: str | None) -> None:
    assert cors().response_headers(origin) == [("Vary", "Origin")]


def test_preflight_for_an_allowed_origin_answers_204_with_the_policy() -> None:
    answer = cors().preflight("https://a.example.org", "GET", "authorization, last-event-id")
    headers = dict(answer.headers)
    assert answer.status == 204
    assert headers["Access-Control-Allow-Origin"] == "https://a.example.org"
    assert headers["Access-Control-Allow-Methods"] == "GET, OPTIONS"
    assert (
        headers["Access-Control-Allow-Headers"]
        == "Authorization, Last-Event-ID, If-None-Match, Cache-Control"
    )
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert headers["Access-Control-Max-Age"] == "600"
    assert "Origin" in headers["Vary"]


@pytest.mark.parametrize(
    ("origin", "method", "request_headers"),
    [
        ("https://evil.test", "GET", None),
        (None, "GET", None),
        ("https://app.example.com", "PUT", None),
        ("https://app.example.com", "POST", None),
        ("https://app.example.com", "DELETE", None),
        ("https://app.example.com", "GET", "content-type"),
        ("https://app.example.com", "GET", "idempotency-key"),
        ("https://app.example.com", None, None),
        ("https://app.example.com", "GET", "X-Custom"),
    ],
)
def test_preflight_refusals_are_403_without_cors_headers(
    origin: str | None, method: str | None, request_headers: str | None
) -> None:
    answer = cors().preflight(origin, method, request_headers)
    assert answer.status == 403
    assert [name for name, _ in answer.headers] == ["Vary"]


def test_cors_options_are_adjustable() -> None:
    policy = CorsPolicy(OriginPolicy(["https://a.test"]), allow_headers=["X-Custom"], allow_credentials=False)
    answer = policy.preflight("https://a.test", "GET", "x-custom")
    assert answer.status == 204
    assert "Access-Control-Allow-Credentials" not in dict(answer.headers)
