"""Presence in this process's memory."""

from __future__ import annotations

from tidings.core.presence import ClientInfo

__all__ = ["MemoryPresence"]


class MemoryPresence:
    def __init__(self) -> None:
        self._channels: dict[str, dict[str, tuple[ClientInfo, float]]] = {}

    async def add(self, channel: str, client: ClientInfo, ttl: float, now: float) -> None:
        self._channels.setdefault(channel, {})[client.client] = (client, now + ttl)

    async def remove(self, channel: str, client_id: str) -> None:
        entries = self._channels.get(channel)
        if entries is not None:
            entries.pop(client_id, None)
            if not entries:
                del self._channels[channel]

    async def list(self, channel: str, now: float) -> list[ClientInfo]:
        entries = self._channels.get(channel)
        if entries is None:
            return []
        for client_id in [c for c, (_, until) in entries.items() if until <= now]:
            del entries[client_id]
        if not entries:  # every lease ended: the channel's entry goes too
            del self._channels[channel]
        return [info for info, _ in entries.values()]

    async def close(self) -> None:
        self._channels.clear()
