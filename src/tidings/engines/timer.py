"""A driver's one timer per connection: the machine's deadline, re-armed when it moves."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["Timed", "Timer"]


class Timed:
    """A base for a connection that keeps one timer: :meth:`arm` it for the machine's deadline
    (a new time replaces the old one, None cancels it, the time it already has costs a
    comparison); :meth:`_tick` runs when it fires. A base rather than a member object, so that an
    idle connection of the owned-socket engine carries no timer object and bound method of its
    own (memory per idle connection counts)."""

    __slots__ = ("_timer", "_timer_at")

    _timer: asyncio.TimerHandle | None
    _timer_at: float | None

    def arm(self, loop: asyncio.AbstractEventLoop, when: float | None) -> None:
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = None if when is None else loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = self._timer_at = None
        self._tick()

    def _tick(self) -> None:
        raise NotImplementedError


class Timer(Timed):
    """A :class:`Timed` that calls ``callback``."""

    __slots__ = ("_callback", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._timer = self._timer_at = None

    def at(self, when: float | None) -> None:
        self.arm(self._loop, when)

    def _tick(self) -> None:
        self._callback()
