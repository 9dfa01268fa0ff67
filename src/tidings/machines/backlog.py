"""The slow-consumer rule of every transport and engine (``limits.outbox_bytes``), sans-I/O."""

from __future__ import annotations

__all__ = ["Backlog", "close_timeout"]


class Backlog:
    """When a consumer is slow: the one rule (``limits.outbox_bytes``) for every engine.

    A connection's *backlog* is the bytes written to it that its peer has not taken yet (what
    waits in its outbox, or in its transport's write buffer). Past ``limit`` the consumer is slow
    and is cut (4008). Bytes that are bounded by something else are *allowed* on top of the limit
    (:meth:`allow`): a resume's replay, bounded by the channel's history, and what a stream
    produces before it goes live (its ``ready`` notice, gaps and replay). Counting them would cut
    every client that resumes from further back than the limit, on every retry. The allowance
    lasts until the backlog is back within the limit, i.e. until the client has read the replay;
    from then on only live data the client fails to read counts.

    Pure arithmetic, no I/O: the caller reports the backlog it measures after each write.
    """

    __slots__ = ("allowance", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.allowance = 0

    def allow(self, size: int) -> None:
        """Let ``size`` more bytes (replay) sit in the backlog without counting."""
        self.allowance += size

    def overflows(self, backlog: int) -> bool:
        """Whether a backlog of ``backlog`` bytes makes the consumer slow."""
        if backlog <= self.limit:
            self.allowance = 0  # the allowed bytes have been taken
            return False
        return backlog > self.limit + self.allowance


def close_timeout(idle_timeout: float) -> float:
    """Seconds a connection being closed gets to take its farewell (a WebSocket close frame, a
    stream's ``disconnect`` notice) before it is cut: a client that reads nothing is not
    waited for (``limits.idle_timeout``, at most 10 s)."""
    return min(10.0, idle_timeout)
