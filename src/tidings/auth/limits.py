"""Limits as pure code: a token bucket, a connection counter, and the client's real address.

Nothing here reads a clock or touches a socket: time is an argument (any monotonic seconds, e.g.
``time.monotonic()``), and the callers (the transports) do the I/O. None of these objects is
thread-safe; they are meant for one event loop, where every method runs to completion.

* :class:`TokenBucket` limits a connection's publish rate (``[limits] publish_rate`` /
  ``publish_burst``).
* :class:`ConnectionLimiter` counts concurrent connections per client address and per user
  (``max_connections_per_ip`` / ``max_connections_per_user``) and raises
  :class:`~tidings.exceptions.RateLimited` (close code 4029, HTTP 429) past the limit.
* :func:`client_address` finds the address a request really comes from, believing
  ``X-Forwarded-For`` only from the ``trusted_proxies`` CIDRs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tidings.exceptions import RateLimited

__all__ = [
    "ConnectionLease",
    "ConnectionLimiter",
    "TokenBucket",
    "TrustedProxies",
    "client_address",
    "is_loopback_address",
    "parse_networks",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TokenBucket:
    """A token bucket: ``rate`` tokens per second refill a bucket holding at most ``burst``.

    The bucket starts full. :meth:`take` spends tokens when there are enough and says whether it
    did; a refused call spends nothing, so a client that keeps trying does not dig itself deeper.
    ``now`` must not go backwards by much: a smaller ``now`` than the last one is treated as no
    time passing (it never adds tokens).
    """

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, *, now: float | None = None) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self._tokens = self.burst
        self._last = now

    def _refill(self, now: float) -> None:
        if self._last is not None and now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        if self._last is None or now > self._last:
            self._last = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend ``cost`` tokens at time ``now`` if the bucket holds them; return whether it did."""
        self._refill(now)
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False

    def tokens(self, now: float) -> float:
        """How many tokens the bucket holds at ``now`` (a snapshot; spends nothing)."""
        self._refill(now)
        return self._tokens

    def retry_after(self, now: float, cost: float = 1.0) -> float:
        """Seconds from ``now`` until ``take(cost)`` would succeed (0 when it would now).

        ``cost`` above ``burst`` can never succeed; the answer is then ``inf``.
        """
        if cost > self.burst:
            return float("inf")
        missing = cost - self.tokens(now)
        return max(0.0, missing / self.rate)


@dataclass(eq=False, slots=True)
class ConnectionLease:
    """One counted connection; give it back with :meth:`ConnectionLimiter.release` (idempotent)."""

    ip_key: str
    user: str = ""
    released: bool = False
    _limiter: ConnectionLimiter | None = field(default=None, repr=False)

    def release(self) -> None:
        """Same as ``limiter.release(self)``; safe to call more than once."""
        if self._limiter is not None:
            self._limiter.release(self)


class ConnectionLimiter:
    """Concurrent connections per client address and per user, with hard ceilings.

    Call :meth:`acquire` when a connection is accepted (before any upgrade or stream starts) and
    :meth:`release` when it ends, on every path (``try/finally``). A connection whose user becomes
    known later (a WebSocket ``connect`` op) is counted against that user with
    :meth:`assign_user`. Anonymous connections (user ``""``) count only against their address.

    IPv6 clients are counted per ``/ipv6_prefix`` network (a /64 by default), because one client
    usually holds a whole /64 and could otherwise open ``max_per_ip`` connections per address.
    Addresses that do not parse (a Unix socket peer) are counted under their literal text.
    """

    def __init__(self, max_per_ip: int, max_per_user: int, *, ipv6_prefix: int = 64) -> None:
        if max_per_ip < 1 or max_per_user < 1 or not 0 <= ipv6_prefix <= 128:
            raise ValueError("limits must be >= 1 and ipv6_prefix within 0..128")
        self.max_per_ip = max_per_ip
        self.max_per_user = max_per_user
        self.ipv6_prefix = ipv6_prefix
        self._by_ip: dict[str, int] = {}
        self._by_user: dict[str, int] = {}

    @classmethod
    def from_settings(cls, settings: Any) -> ConnectionLimiter:
        """The limiter of ``settings.limits`` (``max_connections_per_ip`` / ``_per_user``)."""
        limits = settings.limits
        return cls(limits.max_connections_per_ip, limits.max_connections_per_user)

    def ip_key(self, ip: str) -> str:
        """The counter an address falls under (itself, or its IPv6 network)."""
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return ip
        if isinstance(address, ipaddress.IPv6Address):
            if address.ipv4_mapped is not None:
                return str(address.ipv4_mapped)
            net = ipaddress.IPv6Network((address, self.ipv6_prefix), strict=False)
            return str(net)
        return str(address)

    def acquire(self, ip: str, user: str = "") -> ConnectionLease:
        """Count a new connection from ``ip`` (and ``user``), or raise ``RateLimited``.

        Atomic: when either limit refuses, nothing is counted.
        """
        key = self.ip_key(ip)
        if self._by_ip.get(key, 0) >= self.max_per_ip:
            raise RateLimited(f"too many connections from {key} (limit {self.max_per_ip}); retry later")
        if user and self._by_user.get(user, 0) >= self.max_per_user:
            raise RateLimited(
                f"too many connections for user {user!r} (limit {self.max_per_user}); "
                "close another connection or retry later"
            )
        self._by_ip[key] = self._by_ip.get(key, 0) + 1
        if user:
            self._by_user[user] = self._by_user.get(user, 0) + 1
        return ConnectionLease(key, user, _limiter=self)

    def assign_user(self, lease: ConnectionLease, user: str) -> None:
        """Count ``lease`` against ``user`` from now on, or raise ``RateLimited`` (lease unchanged).

        Moving from one user to another releases the former's count.
        """
        if lease.released:
            raise ValueError("lease already released")
        if user == lease.user:
            return
        if user and self._by_user.get(user, 0) >= self.max_per_user:
            raise RateLimited(
                f"too many connections for user {user!r} (limit {self.max_per_user}); "
                "close another connection or retry later"
            )
        self._decrement(self._by_user, lease.user)
        if user:
            self._by_user[user] = self._by_user.get(user, 0) + 1
        lease.user = user

    def release(self, lease: ConnectionLease) -> None:
        """Stop counting ``lease``; a second release of the same lease does nothing."""
        if lease.released:
            return
        lease.released = True
        self._decrement(self._by_ip, lease.ip_key)
        self._decrement(self._by_user, lease.user)

    @staticmethod
    def _decrement(counts: dict[str, int], key: str) -> None:
        if not key:
            return
        left = counts.get(key, 0) - 1
        if left > 0:
            counts[key] = left
        else:
            counts.pop(key, None)

    def count(self, *, ip: str | None = None, user: str | None = None) -> int:
        """Open connections from ``ip`` (its counter) or of ``user``."""
        if ip is not None:
            return self._by_ip.get(self.ip_key(ip), 0)
        if user is not None:
            return self._by_user.get(user, 0)
        raise TypeError("give ip or user")

    def statistics(self) -> dict[str, int]:
        """A snapshot: addresses and users currently counted, and open connections."""
        return {
            "addresses": len(self._by_ip),
            "users": len(self._by_user),
            "connections": sum(self._by_ip.values()),
        }


def parse_networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDRs (or bare addresses) as networks; raises ``ValueError`` naming a bad entry."""
    networks: list[IPNetwork] = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{cidr!r} is not an IP address or CIDR") from None
    return tuple(networks)


def _parse_ip(text: str) -> IPAddress | None:
    """An address from an ``X-Forwarded-For`` element: ``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    """The reverse proxies whose ``X-Forwarded-For`` is believed (``settings.trusted_proxies``)."""

    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, cidrs: Iterable[str]) -> TrustedProxies:
        return cls(parse_networks(cidrs))

    def __contains__(self, address: object) -> bool:
        if isinstance(address, str):
            parsed = _parse_ip(address)
            if parsed is None:
                return False
            address = parsed
        if not isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return False
        return any(address in net for net in self.networks)


HeaderItems = Iterable[tuple[bytes, bytes]] | Iterable[tuple[str, str]] | Mapping[str, str]


def _header_values(headers: HeaderItems, name: str) -> list[str]:
    items: Iterable[Any] = headers.items() if isinstance(headers, Mapping) else headers
    values = []
    for key, value in items:
        k = key.decode("latin-1") if isinstance(key, bytes) else key
        if k.lower() == name:
            values.append(value.decode("latin-1") if isinstance(value, bytes) else value)
    return values


def client_address(
    scope_client: tuple[str, int] | list[Any] | None,
    headers: HeaderItems,
    trusted_proxies: TrustedProxies | Iterable[str],
) -> str | None:
    """The address a request comes from, as a string (``None`` when the server cannot tell).

    ``scope_client`` is the ASGI ``scope["client"]`` (the TCP peer); ``headers`` the raw ASGI
    headers (or any ``(name, value)`` pairs or a mapping). When the peer is a trusted proxy, the
    ``X-Forwarded-For`` list (every such header, in order) is walked from the right, skipping
    trusted proxies; the first address that is not one is the client. A client can prepend
    anything to the header, but not what the proxies append, so entries left of the first
    untrusted one are never believed. An unparsable entry stops the walk at the last trusted
    hop. Without trusted proxies the header is ignored and the peer is the answer.

    Parse ``trusted_proxies`` once (:meth:`TrustedProxies.parse`) on a hot path.
    """
    proxies = (
        trusted_proxies
        if isinstance(trusted_proxies, TrustedProxies)
        else TrustedProxies.parse(trusted_proxies)
    )
    peer_text = str(scope_client[0]) if scope_client else None
    peer = _parse_ip(peer_text) if peer_text else None
    if peer is None:
        return peer_text
    if not proxies.networks or peer not in proxies:
        return str(peer)
    chain = [part for value in _header_values(headers, "x-forwarded-for") for part in value.split(",")]
    current = peer
    for element in reversed(chain):
        if not element.strip():
            continue
        hop = _parse_ip(element)
        if hop is None:
            break
        current = hop
        if hop not in proxies:
            break
    return str(current)


def is_loopback_address(host: str | None) -> bool:
    """Whether ``host`` (a peer address) is loopback: ``127.0.0.0/8``, ``::1``, mapped forms.

    ``None`` (an unknown peer, e.g. a Unix socket) is not loopback: unknown means untrusted.
    """
    if not host:
        return False
    if host == "localhost":
        return True
    address = _parse_ip(host)
    return address is not None and address.is_loopback
