"""Bounded history of one channel, and the resume rule every broker shares.

``History`` keeps the last ``size`` publications no older than ``ttl`` seconds. ``since()`` answers
a resume request with a :class:`Page` (everything after the requested position, in order) or a
:class:`Gap` (history no longer reaches back, or the epoch changed). Brokers that keep history
elsewhere (SQLite, Redis) feed what they read to :func:`resolve_since` so the rule lives here once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from tidings.core.events import Gap, Page, Publication
from tidings.core.position import Position

__all__ = ["History", "resolve_since"]


def resolve_since(
    channel: str,
    requested: Position,
    current: Position,
    window: Sequence[Publication],
    limit: int,
) -> Page | Gap:
    """Decide a resume from ``requested`` given the channel's ``current`` position and ``window``.

    The caller owes: ``window`` is every publication still in history after ``requested.offset``
    (or, when that is unknown, the whole history), in offset order, all in ``current.epoch``.

    A Gap carries what history still has after the loss, up to ``limit``: from another epoch,
    the current epoch from its oldest kept offset (an offset of another epoch says nothing of
    this one); within the epoch, what follows the requested position. A position ahead of the
    channel's gets an empty Gap: nothing in history comes after it.
    """
    first_wanted = requested.offset + 1
    oldest = window[0].offset if window else None
    if requested.epoch != current.epoch:
        return Gap(channel, current.epoch, first_wanted, oldest, current, list(window[:limit]))
    if requested.offset > current.offset:
        return Gap(channel, current.epoch, first_wanted, oldest, current, [])
    if requested.offset == current.offset:
        return Page([], current)
    after = [p for p in window if p.offset >= first_wanted]
    if not after or after[0].offset != first_wanted:
        oldest = after[0].offset if after else None
        return Gap(channel, current.epoch, first_wanted, oldest, current, after[:limit])
    return Page(after[:limit], current, more=len(after) > limit)


class History:
    """The bounded history of one channel in memory (the in-memory broker's store).

    Not thread-safe; the caller serialises appends (one event loop).
    """

    __slots__ = ("_items", "channel", "epoch", "offset", "size", "ttl")

    def __init__(self, channel: str, epoch: str, size: int, ttl: float, offset: int = 0) -> None:
        self.channel = channel
        self.epoch = epoch
        self.offset = offset
        self.size = size
        self.ttl = ttl
        self._items: deque[Publication] = deque()

    @property
    def position(self) -> Position:
        return Position(self.epoch, self.offset)

    def __len__(self) -> int:
        return len(self._items)

    def next_offset(self) -> int:
        return self.offset + 1

    def append(self, publication: Publication, now_ms: int) -> None:
        """Store ``publication``; the caller owes ``publication.offset == self.next_offset()``."""
        if publication.offset != self.offset + 1 or publication.epoch != self.epoch:
            raise ValueError("publications must be appended in offset order, in this epoch")
        self.offset = publication.offset
        if self.size > 0:
            self._items.append(publication)
            if len(self._items) > self.size:
                self._items.popleft()
        self.expire(now_ms)

    def expire(self, now_ms: int) -> None:
        """Drop publications older than ``ttl`` (a TTL of 0 or less keeps them by size alone)."""
        if self.ttl <= 0:
            return
        horizon = now_ms - self.ttl * 1000
        items = self._items
        while items and items[0].time < horizon:
            items.popleft()

    def since(self, requested: Position, limit: int, now_ms: int) -> Page | Gap:
        """Publications after ``requested`` (a :class:`Page`), or a :class:`Gap` if lost."""
        self.expire(now_ms)
        if requested.epoch == self.epoch and requested.offset <= self.offset:
            window = self._window_after(requested.offset)
        else:
            window = list(self._items)
        return resolve_since(self.channel, requested, self.position, window, limit)

    def latest(self, limit: int, now_ms: int) -> list[Publication]:
        """The last ``limit`` publications, in offset order."""
        self.expire(now_ms)
        if limit <= 0:
            return []
        items = self._items
        start = max(0, len(items) - limit)
        return [items[i] for i in range(start, len(items))]

    def _window_after(self, offset: int) -> list[Publication]:
        items = self._items
        if not items:
            return []
        first = items[0].offset
        start = max(0, offset + 1 - first)
        return [items[i] for i in range(start, len(items))]
