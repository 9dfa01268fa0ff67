"""A synchronous facade over :class:`tidings.Client` for scripts.

::

    with tidings.SyncClient("http://127.0.0.1:8600") as client:
        for item in client.subscribe("news", limit=10):
            print(item)
        client.publish("news", {"n": 1})

The async client runs on an event loop in a background thread; calls block until it answers.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

from tidings.client.client import Client, Item, Subscription
from tidings.core.position import Position

__all__ = ["SyncClient"]


class SyncClient:
    def __init__(self, base_url: str, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="tidings-client")
        self._thread.start()
        self._client: Client = self._call(self._make(base_url, options))

    @staticmethod
    async def _make(base_url: str, options: dict[str, Any]) -> Client:
        return Client(base_url, **options)

    def _call(self, coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def subscribe(
        self,
        channel: str,
        *,
        since: Position | str | None = None,
        limit: int | None = None,
        timeout: float | None = None,
    ) -> Iterator[Item]:
        """Subscribe now; the iterator yields publications and gaps, and stops after ``limit``
        items or ``timeout`` seconds of silence."""

        async def start() -> Subscription:
            return self._client.subscribe(channel, since=since)

        return self._iterate(self._call(start()), limit, timeout)

    def _iterate(self, sub: Subscription, limit: int | None, timeout: float | None) -> Iterator[Item]:
        received = 0
        try:
            while limit is None or received < limit:
                yield self._call(asyncio.wait_for(sub.__anext__(), timeout))
                received += 1
        except (StopAsyncIteration, TimeoutError):
            return
        finally:
            self._call(sub.aclose())

    def publish(
        self, channel: str, data: Any, event: str | None = None, idempotency_key: str | None = None
    ) -> int:
        offset: int = self._call(self._client.publish(channel, data, event, idempotency_key))
        return offset

    def rpc(self, method: str, data: Any = None) -> Any:
        return self._call(self._client.rpc(method, data))

    def presence(self, channel: str) -> list[dict[str, Any]]:
        clients: list[dict[str, Any]] = self._call(self._client.presence(channel))
        return clients

    def close(self) -> None:
        if self._loop.is_running():
            self._call(self._client.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._loop.is_running() and not self._loop.is_closed():
            self._loop.close()
