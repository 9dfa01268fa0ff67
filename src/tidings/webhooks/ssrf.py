"""SSRF guard: which addresses a webhook may reach, and a resolver that pins the checked one.

Classification is pure (:func:`refusal`). An address is refused unless it is globally routable
unicast; addresses that embed an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible,
NAT64 ``64:ff9b::/96`` and ``64:ff9b:1::/48``, 6to4 ``2002::/16``, Teredo ``2001::/32``) are
judged by the embedded address as well, and the cloud metadata addresses are named explicitly.
An allow list of networks (``webhooks.allow_private``) lifts the refusal, for development and
tests.

:func:`resolve` resolves the host **once**, refuses the whole name if any of its addresses is
refused (so a mixed answer cannot be used), and returns the address it checked; the dispatcher
connects to that address (with the original ``Host`` header and TLS server name), so there is no
window for DNS rebinding between the check and the connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from tidings.exceptions import BadRequest, Forbidden

__all__ = [
    "METADATA_ADDRESSES",
    "Allowed",
    "IPAddress",
    "Network",
    "Target",
    "embedded_ipv4",
    "parse_networks",
    "refusal",
    "resolve",
    "split_url",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean …
        "169.254.170.2",  # AWS ECS task metadata
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
        "fd00:ec2::254",  # AWS over IPv6
    )
)

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses carried inside an IPv6 address (empty for an ordinary one)."""
    if isinstance(address, ipaddress.IPv4Address):
        return []
    found: list[ipaddress.IPv4Address] = []
    value = int(address)
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address in _NAT64 or address in _NAT64_LOCAL or (address in _IPV4_COMPATIBLE and value > 1):
        found.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    if address in _SIX_TO_FOUR:
        found.append(ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF))
    if address in _TEREDO:
        found.append(ipaddress.IPv4Address((value >> 64) & 0xFFFFFFFF))  # the Teredo server
        found.append(ipaddress.IPv4Address(~value & 0xFFFFFFFF))  # the obfuscated client
    return found


def _own_refusal(address: IPAddress) -> str | None:
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for attribute in (
        "is_loopback",
        "is_unspecified",
        "is_link_local",
        "is_multicast",
        "is_private",
        "is_reserved",
    ):
        if getattr(address, attribute):
            return f"{attribute.removeprefix('is_').replace('_', '-')}"
    if not address.is_global:
        return "not globally routable"
    return None


def _translated(address: IPAddress) -> bool:
    """Whether ``address`` is only a wrapper around an IPv4 address (judged by that one)."""
    return isinstance(address, ipaddress.IPv6Address) and (
        address.ipv4_mapped is not None or address in _NAT64 or address in _SIX_TO_FOUR
    )


def refusal(address: IPAddress, allowed: Sequence[Network] = ()) -> str | None:
    """Why ``address`` must not be reached, or None if it may (pure)."""
    embedded = embedded_ipv4(address)
    candidates: list[IPAddress] = [address, *embedded]
    if any(c in net for c in candidates for net in allowed if net.version == c.version):
        return None
    for inner in embedded:
        reason = _own_refusal(inner)
        if reason is not None:
            return f"{address} embeds {inner}, {reason}"
    if embedded and _translated(address):
        return None
    reason = _own_refusal(address)
    return None if reason is None else f"{address} is {reason}"


def parse_networks(cidrs: Sequence[str]) -> list[Network]:
    return [ipaddress.ip_network(cidr, strict=False) for cidr in cidrs]


@dataclass(frozen=True, slots=True)
class Target:
    """A URL split for a pinned connection."""

    scheme: str
    host: str  # as written in the URL (a name or an address, without brackets)
    port: int
    path: str  # path and query

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    def url_for(self, address: IPAddress) -> str:
        host = f"[{address}]" if address.version == 6 else str(address)
        return f"{self.scheme}://{host}:{self.port}{self.path}"


def split_url(url: str) -> Target:
    """Check that ``url`` is an absolute http(s) URL without credentials; raise BadRequest."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise BadRequest("invalid URL") from None
    if parts.scheme not in ("http", "https"):
        raise BadRequest("only http and https URLs are allowed")
    if not parts.hostname:
        raise BadRequest("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise BadRequest("credentials in the URL are not allowed")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), path)


@dataclass(frozen=True, slots=True)
class Allowed:
    """A checked address to connect to."""

    target: Target
    address: IPAddress


async def resolve(target: Target, allowed: Sequence[Network]) -> Allowed:
    """Resolve ``target.host`` once and check every address; raise Forbidden (refused) or
    BadRequest (does not resolve)."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(target.host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise BadRequest(f"cannot resolve {target.host}: {exc}") from None
        addresses = []
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).partition("%")[0])
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise BadRequest(f"cannot resolve {target.host}")
    for address in addresses:
        reason = refusal(address, allowed)
        if reason is not None:
            raise Forbidden(f"refused by the SSRF guard: {reason}")
    return Allowed(target, addresses[0])
