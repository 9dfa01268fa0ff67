"""Positions: where a channel's stream stands, as ``(epoch, offset)``.

An offset is only comparable within one epoch: the epoch changes whenever a channel's history is
lost or reset, so a client holding a position from another epoch cannot resume gap-free.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass

__all__ = ["EPOCH_ALPHABET", "Position", "new_epoch"]

EPOCH_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@dataclass(frozen=True, slots=True)
class Position:
    """The offset of the last publication seen on a channel, within ``epoch`` (0: none yet)."""

    epoch: str
    offset: int

    def to_dict(self) -> dict[str, str | int]:
        return {"epoch": self.epoch, "offset": self.offset}


def new_epoch(random_bytes: bytes | None = None) -> str:
    """A fresh epoch: 6 random bytes as 8 URL-safe characters (never contains ``:`` or ``.``).

    ``random_bytes`` lets tests make it deterministic; the default draws from the OS.
    """
    raw = random_bytes if random_bytes is not None else os.urandom(6)
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
