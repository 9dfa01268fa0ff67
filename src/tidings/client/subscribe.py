"""The CLI's subscribe loop, on the Python client."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tidings.client.client import Client
from tidings.core.events import Gap

__all__ = ["run_subscribe"]


async def run_subscribe(
    url: str,
    channels: list[str],
    *,
    transport: str,
    cursor: str | None,
    token: str | None,
    count: int | None,
    emit: Callable[[Any], None],
    notice: Callable[[Any], None],
    interval: float = 1.0,
    delta: bool = False,
) -> None:
    """Print every publication of ``channels`` (NDJSON via ``emit``), gaps via ``notice``.

    ``interval`` is the short-polling period in seconds; ``delta`` asks for delta updates."""
    async with Client(url, token=token, transport=transport, poll_interval=interval, delta=delta) as client:
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def pump(channel: str) -> None:
            async for item in client.subscribe(channel, since=cursor):
                await queue.put(item)

        pumps = [asyncio.create_task(pump(ch)) for ch in channels]
        received = 0
        try:
            while count is None or received < count:
                getter = asyncio.create_task(queue.get())
                done, _ = await asyncio.wait([getter, *pumps], return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    for task in done:
                        task.result()  # a subscription failed for good: raise its error
                    continue
                item = getter.result()
                if isinstance(item, Gap):
                    notice({"op": "gap", **item.to_dict()})
                    continue
                emit({**item.to_dict(), "cursor": item.cursor})
                received += 1
        finally:
            for task in pumps:
                task.cancel()
