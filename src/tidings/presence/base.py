"""The PresenceManager protocol.

Contract: ``add`` records (or refreshes) a client in a channel for ``ttl`` seconds from ``now``;
entries not refreshed within their lease vanish from ``list``; ``remove`` is idempotent. Nodes
refresh the leases of their live clients well within the ttl, so a crashed node's clients vanish.

:class:`ClientInfo` (:mod:`tidings.core.presence`) is importable from here too: it is what a
presence manager keeps.
"""

from __future__ import annotations

from typing import Protocol

from tidings.core.presence import ClientInfo

__all__ = ["ClientInfo", "PresenceManager"]


class PresenceManager(Protocol):
    async def add(self, channel: str, client: ClientInfo, ttl: float, now: float) -> None: ...

    async def remove(self, channel: str, client_id: str) -> None: ...

    async def list(self, channel: str, now: float) -> list[ClientInfo]: ...

    async def close(self) -> None: ...
