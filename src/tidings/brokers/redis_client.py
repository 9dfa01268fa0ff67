"""Reaching Redis, for the Redis broker and everything that shares its client (Redis presence,
the webhook queue): the client for a broker URL, the gate that bounds commands in flight and
translates failures, the key layout of a channel, and the packaged Lua scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.resources
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from tidings.exceptions import Unavailable

__all__ = [
    "PREFIX",
    "ChannelKeys",
    "CommandGate",
    "channel_keys",
    "channel_of_pubsub",
    "load_script",
    "redis_client",
    "translated",
]

PREFIX = "tidings"


def load_script(name: str) -> str:
    """The text of ``tidings/brokers/lua/<name>`` (packaged with the module)."""
    return importlib.resources.files("tidings.brokers").joinpath("lua", name).read_text("utf-8")


@dataclass(frozen=True, slots=True)
class ChannelKeys:
    meta: str
    history: str
    pubsub: str
    presence: str
    presence_expiry: str

    def idempotency(self, key: str) -> str:
        return f"{self.meta[: -len(':meta')]}:idem:{key}"


@functools.lru_cache(maxsize=16384)
def channel_keys(channel: str) -> ChannelKeys:
    """The Redis keys of ``channel``; all in one cluster slot thanks to the ``{…}`` hash tag."""
    tag = f"{{{PREFIX}:{channel}}}"
    return ChannelKeys(
        f"{tag}:meta", f"{tag}:history", f"{tag}:pub", f"{tag}:presence", f"{tag}:presence:exp"
    )


def channel_of_pubsub(name: bytes) -> str:
    """``{tidings:<ch>}:pub`` → ``<ch>`` (channel names never contain braces)."""
    return name.decode()[len(PREFIX) + 2 : -len("}:pub")]


@contextlib.asynccontextmanager
async def translated(what: str) -> AsyncIterator[None]:
    """Turn every failure to reach Redis into Unavailable (the one translation point)."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise Unavailable(f"redis {what} failed: {exc}") from exc


def redis_client(
    url: str, *, command_timeout: float = 10.0, max_connections: int = 100
) -> aioredis.Redis | RedisCluster:
    """A redis-py client for a broker URL: ``redis://`` / ``rediss://`` (one Redis, no library
    retries: a retried ``EVALSHA`` whose reply was lost would apply twice) or
    ``redis-cluster://host:port`` (any node; redis-py follows failovers itself)."""
    common: dict[str, Any] = {
        "socket_connect_timeout": 2.0,
        "socket_timeout": command_timeout,
        "max_connections": max_connections,
    }
    if url.startswith("redis-cluster://"):
        parts = urlsplit(url)
        return RedisCluster(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            username=parts.username,
            password=parts.password,
            **common,
        )
    return aioredis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **common)


class CommandGate:
    """Bounds the commands in flight to the client's connection pool, and translates failures.

    redis-py's pools raise "Too many connections" past their size instead of waiting, so a burst
    of concurrent publishes would fail; behind this gate the burst queues instead.
    """

    def __init__(self, limit: int) -> None:
        self._slots = asyncio.Semaphore(limit)

    @contextlib.asynccontextmanager
    async def __call__(self, what: str) -> AsyncIterator[None]:
        async with self._slots, translated(what):
            yield
