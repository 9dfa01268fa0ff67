"""Resume = history + live, merged in order with no duplicates and no silent hole.

While a subscription's history is being read (an await at the edge), live publications for the
channel keep arriving. :class:`Recovery` buffers them and :meth:`Recovery.finish` merges: the
history part first, then buffered live publications that come after it, each offset once. A live
publication that skips ahead of what was read is kept (history was read before it was appended);
one from another epoch than the answer's is dropped, since it can only be older.

The merge does not end at ``finish``: the broker's live link and the history read are two
different paths (on Redis, two connections), so the read can return publications the link has
yet to hand over. Until the link passes the position ``finish`` left the subscriber at, what it
hands over is filtered by the same rule, :func:`is_new_to` (the hub keeps such subscribers
apart, CATCHING, and makes them LIVE at the first publication that is new to them). One rule,
here, for every transport on both engines.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tidings.core.events import Gap, Page, Publication
from tidings.core.position import Position

__all__ = ["Recovered", "Recovery", "is_new_to", "notice_concerns"]


def is_new_to(position: Position, publication: Publication) -> bool:
    """Whether a subscriber that has received everything up to ``position`` lacks ``publication``.

    Offsets compare within one epoch only. A publication of another epoch is taken as older (a
    link still handing over what preceded the epoch the subscriber read): a newer epoch reaches
    a subscriber only after the gap notice that announces it (:func:`notice_concerns`).
    """
    return publication.epoch == position.epoch and publication.offset > position.offset


def notice_concerns(position: Position, notice: Mapping[str, Any]) -> bool:
    """Whether a broker's control ``notice`` is news to a subscriber at ``position``.

    A gap notice (``{"op": "gap", "epoch", "requested", "available_from"}``) concerns it if it
    moves the channel to another epoch, or loses an offset after ``position`` (history no longer
    holds ``position.offset + 1``); a subscriber whose own history read already covered the lost
    range is not told twice. Other notices (join, leave) concern every subscriber.
    """
    if notice.get("op") != "gap":
        return True
    if notice.get("epoch") != position.epoch:
        return True
    available = notice.get("available_from")
    return not isinstance(available, int) or available > position.offset + 1


@dataclass(frozen=True, slots=True)
class Recovered:
    """What to tell and send a subscriber once its history has been read.

    ``recovered`` is true when every publication after the requested position is in
    ``publications`` (always true without a ``since``); ``gap`` is set when it is not;
    ``position`` is the channel's position after the last publication sent.
    """

    recovered: bool
    publications: list[Publication]
    position: Position
    gap: Gap | None = None


@dataclass(slots=True)
class Recovery:
    """The merge of one subscription's history read with the live publications it overlaps."""

    channel: str
    since: Position | None
    buffered: list[Publication] = field(default_factory=list)

    def buffer(self, publication: Publication) -> None:
        """Keep a live publication that arrived while history was being read."""
        self.buffered.append(publication)

    def finish(self, answer: Page | Gap | Position) -> Recovered:
        """Merge ``answer`` (a Page or Gap for a ``since``, else the current position).

        The caller owes a complete answer: history read with a limit of at least the namespace's
        history size. A page cut short (``more``) is refused with :class:`ValueError`, since the
        live publications after it would leave a silent hole between the two.
        """
        if isinstance(answer, Page) and answer.more:
            raise ValueError("a recovery needs the complete history after since, not a page")
        if isinstance(answer, Position):
            gap: Gap | None = None
            history: list[Publication] = []
            position = answer
        elif isinstance(answer, Gap):
            gap, history, position = answer, answer.publications, answer.position
        else:
            gap, history, position = None, answer.publications, answer.position
        if history:
            last = history[-1].position
            if last.epoch == position.epoch and last.offset > position.offset:
                position = last
        merged = list(history)
        mark = Position(position.epoch, merged[-1].offset if merged else position.offset)
        for pub in self.buffered:
            if is_new_to(mark, pub):
                merged.append(pub)
                mark = pub.position
        if merged and merged[-1].epoch == position.epoch and merged[-1].offset > position.offset:
            position = merged[-1].position
        self.buffered = []
        return Recovered(gap is None, merged, position, gap)
