"""The client address behind proxies, in the ASGI-scope form the ops edges use."""

from __future__ import annotations

from typing import Any

from tidings.auth.proxy import TrustedProxies, client_address

TRUSTED = TrustedProxies.parse(["127.0.0.1/32", "10.0.0.0/8"])


def scope(peer: str, *forwarded: str) -> dict[str, Any]:
    return {"client": (peer, 5555), "headers": [(b"x-forwarded-for", value.encode()) for value in forwarded]}


def test_the_header_is_ignored_from_an_untrusted_peer():
    assert client_address(scope("198.51.100.9", "203.0.113.7"), TRUSTED) == "198.51.100.9"


def test_the_first_untrusted_hop_from_the_right_is_the_client():
    assert client_address(scope("127.0.0.1", "203.0.113.7"), TRUSTED) == "203.0.113.7"
    forged = scope("127.0.0.1", "1.2.3.4, 203.0.113.7, 10.1.2.3")
    assert client_address(forged, TRUSTED) == "203.0.113.7"  # 1.2.3.4 was the client's own claim


def test_garbage_stops_the_walk_at_the_last_trusted_hop():
    assert client_address(scope("127.0.0.1", "not-an-ip"), TRUSTED) == "127.0.0.1"


def test_without_trusted_proxies_or_a_peer():
    assert client_address(scope("127.0.0.1", "203.0.113.7"), []) == "127.0.0.1"
    assert client_address({"headers": []}, TRUSTED) is None
