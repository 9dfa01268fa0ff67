"""The PresenceManager protocol.

Contract: ``add`` records (or refreshes) a client in a channel for ``ttl`` seconds from ``now``;
entries not refreshed within their lease vanish from ``list``; ``remove`` is idempotent. Nodes
refresh the leases of their live clients well within the ttl, so a crashed node's clients vanish.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["ClientInfo", "PresenceManager"]


@dataclass(frozen=True, slots=True)
class ClientInfo:
    client: str
    user: str
    info: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"client": self.client, "user": self.user, "info": self.info}


class PresenceManager(Protocol):
    async def add(self, channel: str, client: ClientInfo, ttl: float, now: float) -> None: ...

    async def remove(self, channel: str, client_id: str) -> None: ...

    async def list(self, channel: str, now: float) -> list[ClientInfo]: ...

    async def close(self) -> None: ...
