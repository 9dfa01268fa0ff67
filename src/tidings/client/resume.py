"""What every transport of the Python client does when a connection drops: wait (exponential
backoff with full jitter) and resume, surfacing a :class:`~tidings.Gap` where the server's notice
says history could not cover the resume."""

from __future__ import annotations

import random
from typing import Any

from tidings.core.events import Gap
from tidings.core.position import Position

__all__ = ["Backoff", "gap_from"]


class Backoff:
    """Exponential backoff with full jitter: a random delay in ``[0, min(cap, base * 2**n))``."""

    def __init__(self, base: float = 0.25, cap: float = 10.0) -> None:
        self.base, self.cap, self.attempt = base, cap, 0

    def next_delay(self) -> float:
        delay = random.uniform(0, min(self.cap, self.base * 2**self.attempt))
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


def gap_from(obj: dict[str, Any], position: Position | None = None) -> Gap:
    """The :class:`Gap` of a server's ``gap`` notice (``position``: where the channel stands)."""
    epoch = str(obj["epoch"])
    return Gap(
        str(obj["channel"]),
        epoch,
        int(obj["requested"]),
        obj.get("available_from"),
        position or Position(epoch, 0),
    )
