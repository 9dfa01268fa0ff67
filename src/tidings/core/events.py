"""Publications, and the values the core hands back instead of raising: pages and gaps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tidings.core.position import Position

__all__ = ["Gap", "Page", "Publication"]


@dataclass(frozen=True, slots=True)
class Publication:
    """One message on one channel, as stored in history and delivered on every transport.

    ``time`` is Unix time in milliseconds; ``id`` is unique across channels and nodes.
    ``cursor`` is set on publications a client received: where to resume after this one.
    ``data_json`` is ``data`` as compact JSON when the publisher's check already encoded it
    (``Node.publish``), so the broker and the fan-out splice it in instead of encoding again;
    it is not part of the value (equality, ``to_dict``) and history does not keep it.
    """

    channel: str
    offset: int
    epoch: str
    id: str
    time: int
    event: str
    data: Any
    cursor: str | None = None
    data_json: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def position(self) -> Position:
        return Position(self.epoch, self.offset)

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "offset": self.offset,
            "epoch": self.epoch,
            "id": self.id,
            "time": self.time,
            "event": self.event,
            "data": self.data,
        }

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> Publication:
        return cls(
            channel=value["channel"],
            offset=value["offset"],
            epoch=value["epoch"],
            id=value["id"],
            time=value["time"],
            event=value["event"],
            data=value.get("data"),
            cursor=value.get("cursor"),
        )


@dataclass(frozen=True, slots=True)
class Page:
    """Publications after a requested position, in offset order.

    ``position`` is the channel's latest position when the page was read; ``more`` is true when
    ``limit`` cut the page short and a further read (from the last offset) has more.
    """

    publications: list[Publication]
    position: Position
    more: bool = False


@dataclass(frozen=True, slots=True)
class Gap:
    """History can no longer cover a resume: the client must be told, never silently shorted.

    ``requested`` is the first offset the client asked for (last seen + 1); ``available_from``
    is the oldest offset still in history in the current epoch (None when history is empty);
    ``position`` is where the channel stands now, so the subscription continues from there.
    ``publications`` holds what history still has (from ``available_from``), for callers that
    want to deliver the part that survived after the notice.
    """

    channel: str
    epoch: str
    requested: int
    available_from: int | None
    position: Position
    publications: list[Publication] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "epoch": self.epoch,
            "requested": self.requested,
            "available_from": self.available_from,
        }
