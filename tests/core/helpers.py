"""Small factories shared by the core tests."""

from __future__ import annotations

from typing import Any

from tidings.core.events import Publication

EPOCH = "AAAAAAAA"
OTHER_EPOCH = "BBBBBBBB"


def pub(
    offset: int,
    *,
    channel: str = "chat:lobby",
    epoch: str = EPOCH,
    time: int = 0,
    event: str = "message",
    data: Any = None,
) -> Publication:
    """A publication with a predictable id (``channel/epoch/offset``)."""
    return Publication(
        channel,
        offset,
        epoch,
        f"{channel}/{epoch}/{offset}",
        time,
        event,
        {"n": offset} if data is None else data,
    )
