"""A driver's one timer per connection: the machine's deadline, re-armed when it moves."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["Timer"]


class Timer:
    """Calls ``callback`` once at :meth:`at`'s time (the loop's clock); a new time replaces the
    old one, None cancels it. Setting the time it already has costs a comparison."""

    __slots__ = ("_callback", "_handle", "_loop", "_when")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._when: float | None = None

    def at(self, when: float | None) -> None:
        if when == self._when:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._when = when
        self._handle = None if when is None else self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle = self._when = None
        self._callback()
