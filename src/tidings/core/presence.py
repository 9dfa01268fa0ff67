"""Who is in a channel: the entry presence keeps for a client, and announces on join and leave.

The WebSocket transport builds it, the node and every presence manager keep and list it, the
server API shows it: a plain value, so it lives here, below all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["ClientInfo"]


@dataclass(frozen=True, slots=True)
class ClientInfo:
    client: str
    user: str
    info: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"client": self.client, "user": self.user, "info": self.info}
