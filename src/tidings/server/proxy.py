"""The client's address behind reverse proxies: ``X-Forwarded-For`` only from trusted proxies.

Anyone can send ``X-Forwarded-For``; believing it from everyone would let a client pick the
address its per-IP limits are counted against. So the header is read only when the peer that
connected to us is in ``settings.trusted_proxies`` (CIDRs), and then from the right: each hop
appended by a trusted proxy is skipped, and the first address not in the list is the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["Network", "TrustedProxies", "client_address", "parse_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """``["10.0.0.0/8", "127.0.0.1"]`` as networks; raises ValueError for a bad entry."""
    return tuple(ipaddress.ip_network(cidr.strip(), strict=False) for cidr in cidrs)


class TrustedProxies:
    """A set of networks whose ``X-Forwarded-For`` is believed."""

    __slots__ = ("networks",)

    def __init__(self, cidrs: Iterable[str] | Sequence[Network] = ()) -> None:
        items = list(cidrs)
        self.networks: tuple[Network, ...] = tuple(
            item if isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network)
            else ipaddress.ip_network(item.strip(), strict=False)
            for item in items)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, str):
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)


def _forwarded_for(scope: dict[str, Any]) -> list[str]:
    hops: list[str] = []
    for name, value in scope.get("headers", ()):
        if name == b"x-forwarded-for":
            hops += [part.strip() for part in value.decode("latin-1").split(",")]
    return [hop for hop in hops if hop]


def _valid(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def client_address(scope: dict[str, Any], trusted: TrustedProxies | Iterable[str]) -> str | None:
    """The client's IP address for an ASGI ``scope`` (see the module docstring).

    None when the server does not know the peer (e.g. a Unix socket).
    """
    if not isinstance(trusted, TrustedProxies):
        trusted = TrustedProxies(trusted)
    client = scope.get("client")
    peer: str | None = client[0] if client else None
    if peer is None or not trusted or peer not in trusted:
        return peer
    current = peer
    for hop in reversed(_forwarded_for(scope)):
        if not _valid(hop):
            break  # garbage before this point was written by someone we do not trust
        current = hop
        if hop not in trusted:
            break
    return current
