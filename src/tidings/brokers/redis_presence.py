"""Presence in Redis, shared by every node on the same Redis (or Redis Cluster): the presence
manager a Redis broker makes (:meth:`~tidings.brokers.redis.RedisBroker.presence_manager`).

Per channel, two keys in the channel's slot (see
:func:`tidings.brokers.redis_client.channel_keys`): a hash ``client id → client JSON`` and a
sorted set ``client id → lease end (Unix ms)``. ``add`` writes both and keeps the keys alive a
minute past the longest lease (so an abandoned channel vanishes); ``list`` first drops the leases
that ended, then reads the hash; each is one Lua script, so a reader never sees a client whose
lease ended. Time is the caller's ``now`` (seconds).
"""

from __future__ import annotations

from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from tidings.brokers.redis_client import CommandGate, channel_keys, load_script
from tidings.core.presence import ClientInfo

__all__ = ["RedisPresence"]


class RedisPresence:
    """A :class:`~tidings.presence.base.PresenceManager` on a client the broker owns.

    ``close`` does not close the client: the broker that made this manager does. ``gate``
    is the broker's, so presence and publications share one bound on connections.
    """

    def __init__(self, client: aioredis.Redis | RedisCluster, gate: CommandGate) -> None:
        self._redis = client
        self._gate = gate
        self._add = client.register_script(load_script("presence_add.lua"))
        self._list = client.register_script(load_script("presence_list.lua"))
        self._remove = client.register_script(load_script("presence_remove.lua"))

    async def add(self, channel: str, client: ClientInfo, ttl: float, now: float) -> None:
        keys = channel_keys(channel)
        lease_ms = max(1, int(ttl * 1000))
        async with self._gate("presence add"):
            await self._add(
                keys=[keys.presence, keys.presence_expiry],
                args=[client.client, orjson.dumps(client.to_dict()), int(now * 1000) + lease_ms, lease_ms],
            )

    async def remove(self, channel: str, client_id: str) -> None:
        keys = channel_keys(channel)
        async with self._gate("presence remove"):
            await self._remove(keys=[keys.presence, keys.presence_expiry], args=[client_id])

    async def list(self, channel: str, now: float) -> list[ClientInfo]:
        keys = channel_keys(channel)
        async with self._gate("presence list"):
            flat: list[Any] = await self._list(
                keys=[keys.presence, keys.presence_expiry], args=[int(now * 1000)]
            )
        found = []
        for raw in flat[1::2]:
            value = orjson.loads(raw)
            found.append(ClientInfo(value["client"], value["user"], value.get("info")))
        return found

    async def close(self) -> None:
        return None
