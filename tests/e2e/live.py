"""Waiting until client subscriptions are live, without a race against the subscribe."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import tidings

DEADLINE = 20.0


async def wait_live(subs: Sequence[tidings.Subscription], publish: Callable[[str], Awaitable[Any]]) -> None:
    """Publish markers (``"live-0"``, ``"live-1"`` …) until every subscription has read one,
    then read each one up to the last marker: every subscription is live and has nothing of the
    markers left unread.

    A subscription without a cursor starts at the channel's position when it becomes live, so a
    single marker published right after ``subscribe()`` can land before that and be missed.
    """
    pending = {i: asyncio.ensure_future(sub.__anext__()) for i, sub in enumerate(subs)}
    seen: dict[int, str] = {}
    last = ""
    deadline = time.monotonic() + DEADLINE
    try:
        for k in range(10_000):
            if len(seen) == len(subs):
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"subscriptions not live: {sorted(pending)}")
            last = f"live-{k}"
            await publish(last)
            await asyncio.wait(list(pending.values()), timeout=0.25)
            for i, future in list(pending.items()):
                while future.done():
                    data = getattr(future.result(), "data", None)
                    if isinstance(data, str) and data.startswith("live-"):
                        seen[i] = data
                        del pending[i]  # no read left waiting: nothing can be taken and lost
                        break
                    future = pending[i] = asyncio.ensure_future(subs[i].__anext__())
        for i, sub in enumerate(subs):  # the markers published after the one each has read
            while seen[i] != last:
                data = getattr(await asyncio.wait_for(sub.__anext__(), DEADLINE), "data", None)
                if isinstance(data, str) and data.startswith("live-"):
                    seen[i] = data
    finally:
        for future in pending.values():
            future.cancel()
