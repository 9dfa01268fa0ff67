"""The client's address behind reverse proxies: ``X-Forwarded-For`` only from trusted proxies.

Anyone can send ``X-Forwarded-For``; believing it from everyone would let a client pick the
address its per-IP limits are counted against. So the header is read only when the peer that
connected to us is in ``settings.trusted_proxies`` (CIDRs), and then from the right: each hop
appended by a trusted proxy is skipped, and the first address not in the list is the client.

The rule itself lives in :func:`tidings.auth.limits.client_address` (the per-IP limits use it);
this is its ASGI-scope form for the ops edges (access logs, connection logs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tidings.auth.limits import TrustedProxies
from tidings.auth.limits import client_address as _client_address

__all__ = ["TrustedProxies", "client_address"]


def client_address(scope: Mapping[str, Any], trusted: TrustedProxies | Iterable[str]) -> str | None:
    """The client's IP address for an ASGI ``scope`` (see the module docstring).

    None when the server does not know the peer (e.g. a Unix socket).
    """
    return _client_address(scope.get("client"), scope.get("headers", ()), trusted)
