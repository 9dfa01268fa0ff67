"""Token bucket, connection limiter and client-address resolution: pure code, time as argument."""

from __future__ import annotations

import pytest

from tidings.auth.limits import (
    ConnectionLimiter,
    TokenBucket,
    TrustedProxies,
    client_address,
    is_loopback_address,
)
from tidings.exceptions import RateLimited
from tidings.settings import load_settings

# ------------------------------------------------------------------------------- token bucket


def test_bucket_starts_full_and_allows_the_burst_then_refuses() -> None:
    bucket = TokenBucket(rate=10, burst=5)
    assert [bucket.take(0.0) for _ in range(6)] == [True] * 5 + [False]


def test_bucket_refills_at_the_rate_up_to_the_burst() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    for _ in range(5):
        assert bucket.take(0.0)
    assert not bucket.take(0.05)  # half a token
    assert bucket.take(0.1)  # one token after 0.1 s at 10/s
    assert bucket.tokens(100.0) == 5  # never above the burst


def test_a_refused_take_spends_nothing() -> None:
    bucket = TokenBucket(rate=1, burst=1, now=0.0)
    assert bucket.take(0.0)
    for t in (0.2, 0.4, 0.6, 0.8):
        assert not bucket.take(t)
    assert bucket.take(1.0)


def test_time_going_backwards_adds_no_tokens() -> None:
    bucket = TokenBucket(rate=1, burst=2, now=10.0)
    assert bucket.take(10.0)
    assert bucket.take(10.0)
    assert not bucket.take(5.0)
    assert not bucket.take(10.5)
    assert bucket.take(11.0)


def test_retry_after_says_when_the_next_token_arrives() -> None:
    bucket = TokenBucket(rate=4, burst=1, now=0.0)
    assert bucket.retry_after(0.0) == 0
    assert bucket.take(0.0)
    assert bucket.retry_after(0.0) == pytest.approx(0.25)
    assert bucket.retry_after(0.1) == pytest.approx(0.15)
    assert bucket.retry_after(0.0, cost=2) == float("inf")


def test_a_costly_take_needs_that_many_tokens() -> None:
    bucket = TokenBucket(rate=1, burst=3)
    assert not bucket.take(0.0, cost=4)
    assert bucket.take(0.0, cost=3)


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_bucket_refuses_nonsense_parameters(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate, burst)


def test_bucket_from_settings_limits_is_the_publish_rate() -> None:
    limits = load_settings(limits={"publish_rate": 2, "publish_burst": 3}).limits
    bucket = TokenBucket(limits.publish_rate, limits.publish_burst)
    assert sum(bucket.take(0.0) for _ in range(10)) == 3


# --------------------------------------------------------------------------- connection limiter


def test_limiter_refuses_past_the_per_ip_limit_and_counts_releases() -> None:
    limiter = ConnectionLimiter(max_per_ip=2, max_per_user=10)
    first = limiter.acquire("203.0.113.5")
    limiter.acquire("203.0.113.5")
    with pytest.raises(RateLimited, match=r"too many connections from 203\.0\.113\.5") as info:
        limiter.acquire("203.0.113.5")
    assert info.value.code == "rate_limited"
    assert info.value.temporary
    limiter.acquire("203.0.113.6")  # another address is counted apart
    first.release()
    limiter.acquire("203.0.113.5")


def test_limiter_refuses_past_the_per_user_limit_across_addresses() -> None:
    limiter = ConnectionLimiter(max_per_ip=10, max_per_user=2)
    limiter.acquire("198.51.100.1", "ann")
    limiter.acquire("198.51.100.2", "ann")
    with pytest.raises(RateLimited, match="user 'ann'"):
        limiter.acquire("198.51.100.3", "ann")
    limiter.acquire("198.51.100.3", "bob")
    limiter.acquire("198.51.100.3")  # anonymous: only the address counts
    assert limiter.count(user="ann") == 2


def test_a_refused_acquire_counts_nothing() -> None:
    limiter = ConnectionLimiter(max_per_ip=5, max_per_user=1)
    limiter.acquire("192.0.2.1", "ann")
    with pytest.raises(RateLimited):
        limiter.acquire("192.0.2.1", "ann")
    assert limiter.count(ip="192.0.2.1") == 1


def test_release_is_idempotent() -> None:
    limiter = ConnectionLimiter(max_per_ip=5, max_per_user=5)
    lease = limiter.acquire("192.0.2.1", "ann")
    limiter.release(lease)
    limiter.release(lease)
    lease.release()
    assert limiter.statistics() == {"addresses": 0, "users": 0, "connections": 0}


def test_a_user_learned_after_accepting_is_counted_from_then_on() -> None:
    limiter = ConnectionLimiter(max_per_ip=5, max_per_user=1)
    held = limiter.acquire("192.0.2.1", "ann")
    lease = limiter.acquire("192.0.2.2")
    with pytest.raises(RateLimited):
        limiter.assign_user(lease, "ann")
    assert lease.user == ""
    limiter.assign_user(lease, "bob")
    assert limiter.count(user="bob") == 1
    held.release()
    limiter.assign_user(lease, "ann")  # moving releases bob
    assert (limiter.count(user="ann"), limiter.count(user="bob")) == (1, 0)
    lease.release()
    with pytest.raises(ValueError, match="released"):
        limiter.assign_user(lease, "ann")


def test_ipv6_clients_are_counted_per_64_network() -> None:
    limiter = ConnectionLimiter(max_per_ip=2, max_per_user=5)
    limiter.acquire("2001:db8:1:2::1")
    limiter.acquire("2001:db8:1:2:ffff::9")
    with pytest.raises(RateLimited, match="2001:db8:1:2::/64"):
        limiter.acquire("2001:db8:1:2:aaaa::1")
    limiter.acquire("2001:db8:1:3::1")


def test_ipv4_mapped_ipv6_counts_as_the_ipv4_address() -> None:
    limiter = ConnectionLimiter(max_per_ip=1, max_per_user=5)
    limiter.acquire("::ffff:192.0.2.7")
    with pytest.raises(RateLimited):
        limiter.acquire("192.0.2.7")


def test_limiter_from_settings() -> None:
    settings = load_settings(limits={"max_connections_per_ip": 1, "max_connections_per_user": 7})
    limiter = ConnectionLimiter.from_settings(settings)
    assert (limiter.max_per_ip, limiter.max_per_user) == (1, 7)


# ----------------------------------------------------------------------------- client address


def xff(*values: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-forwarded-for", v.encode()) for v in values]


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert client_address(("203.0.113.9", 5000), xff("1.2.3.4"), []) == "203.0.113.9"


def test_an_untrusted_peer_cannot_claim_another_address() -> None:
    proxies = TrustedProxies.parse(["10.0.0.0/8"])
    assert client_address(("203.0.113.9", 5000), xff("1.2.3.4"), proxies) == "203.0.113.9"


def test_a_trusted_proxy_forwards_the_client_address() -> None:
    assert client_address(("10.0.0.2", 5000), xff("198.51.100.7"), ["10.0.0.0/8"]) == "198.51.100.7"


def test_addresses_a_client_prepends_are_not_believed() -> None:
    # the client sent "X-Forwarded-For: 127.0.0.1"; the proxy appended the real peer
    headers = xff("127.0.0.1, 198.51.100.7")
    assert client_address(("10.0.0.2", 1), headers, ["10.0.0.0/8"]) == "198.51.100.7"


def test_a_chain_of_trusted_proxies_is_walked_from_the_right() -> None:
    headers = xff("6.6.6.6, 198.51.100.7", "10.1.1.1")  # two headers: joined in order
    proxies = ["10.0.0.0/8", "192.168.0.0/16"]
    assert client_address(("192.168.1.1", 1), headers, proxies) == "198.51.100.7"


def test_when_every_hop_is_trusted_the_leftmost_is_the_client() -> None:
    headers = xff("10.9.9.9, 10.1.1.1")
    assert client_address(("10.0.0.2", 1), headers, ["10.0.0.0/8"]) == "10.9.9.9"


def test_garbage_in_the_header_stops_at_the_last_trusted_hop() -> None:
    headers = xff("198.51.100.7, unknown, 10.1.1.1")
    assert client_address(("10.0.0.2", 1), headers, ["10.0.0.0/8"]) == "10.1.1.1"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("198.51.100.7:4711", "198.51.100.7"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ('"198.51.100.7"', "198.51.100.7"),
        ("::ffff:198.51.100.7", "198.51.100.7"),
    ],
)
def test_forwarded_addresses_may_carry_ports_brackets_and_mapped_forms(value: str, expected: str) -> None:
    assert client_address(("10.0.0.2", 1), xff(value), ["10.0.0.0/8"]) == expected


def test_headers_may_be_a_mapping_or_str_pairs() -> None:
    proxies = ["127.0.0.1"]
    assert client_address(("127.0.0.1", 1), {"X-Forwarded-For": "192.0.2.1"}, proxies) == "192.0.2.1"
    pairs = [("X-Forwarded-For", "192.0.2.2")]
    assert client_address(("127.0.0.1", 1), pairs, proxies) == "192.0.2.2"


def test_no_peer_means_no_address_and_a_trusted_peer_without_header_is_itself() -> None:
    assert client_address(None, xff("1.2.3.4"), ["0.0.0.0/0"]) is None
    assert client_address(("10.0.0.2", 1), [], ["10.0.0.0/8"]) == "10.0.0.2"


def test_bad_proxy_cidrs_are_refused() -> None:
    with pytest.raises(ValueError, match="'nope' is not an IP"):
        TrustedProxies.parse(["nope"])


def test_settings_take_trusted_proxies() -> None:
    settings = load_settings(trusted_proxies=["10.0.0.0/8", "::1"])
    proxies = TrustedProxies.parse(settings.trusted_proxies)
    assert "10.2.3.4" in proxies
    assert "::1" in proxies
    assert "11.0.0.1" not in proxies


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("10.0.0.1", False),
        ("::", False),
        ("0.0.0.0", False),
        ("", False),
        (None, False),
        ("example.com", False),
    ],
)
def test_loopback_addresses(host: str | None, loopback: bool) -> None:
    assert is_loopback_address(host) is loopback
