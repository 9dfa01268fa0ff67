"""The poll (``GET /poll``): long polling and short polling, sans-I/O.

A **long poll** (:class:`Poll`) is subscribed like a stream and held until its answer is due;
the machine collects the answer and says when it is due, the engine (a driver) moves the events
in and the answer out:

- *news* (a publication or a gap, including what a resume recovers at once): the answer is due
  at the end of the current loop iteration, so that the other publications of the same
  iteration (one fan-out, one broker batch) join it. Up to ``limit`` messages; the cursor stays
  after the last message taken, so the next poll reads what did not fit.
- the *hold timeout* (``timeout``) or the *expiry of the request's token*, whichever comes first
  (:attr:`Poll.deadline`): the answer is due now, with what the poll has (usually nothing) and
  its cursor. After a token's expiry the next poll needs a new token (an expired one is refused
  ``401``) and resumes from that cursor, missing nothing.
- the node's *disconnect* of the connection (the drain on shutdown, ``/api/disconnect``): the
  answer is due now, with what the poll has. One rule for every reason: a poll has no room for a
  notice, and the answer with its cursor is exactly what a client needs to come back (to this
  node after ``/api/disconnect``, to another one after a drain) and miss nothing.
- the *client gone*: no answer, only leave.

The driver's contract, the same on every engine: each input returns ``True`` when the answer
has just become due (once per poll); the driver then calls :meth:`Poll.end` at the end of the
loop iteration (from a timer it may call it at once). **Leave first, then answer**: the driver
leaves the hub and the node, then takes the body from :meth:`Poll.end` and writes it. Nothing can
be lost between the answer and the next poll, since the cursor in the answer is after the last
message it holds and the next poll resumes from it; leaving first means that when the client has
its answer, its poll no longer counts as a connection (its user's connection limit, ``/api/info``)
and no publication is taken into an answer already written.

A **short poll** (``timeout=0``) reads history and answers at once: :func:`merge_by_time` orders
what it read, :func:`short_poll_status` decides between the answer and ``304 Not Modified``.

Time is the driver's monotonic clock (``now``); the token's expiry is a Unix time converted once,
with the ``wall_now`` the driver passes to :class:`Poll`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from enum import Enum

from tidings.core.disconnect import CloseCode, Disconnect, disconnect
from tidings.core.events import Publication
from tidings.core.wire.frames import EncodedPublication, encode_json

__all__ = ["Poll", "Reason", "etag_of", "merge_by_time", "poll_body", "short_poll_status"]


class Reason(Enum):
    """Why a long poll's answer is due."""

    NEWS = "news"
    TIMEOUT = "timeout"
    TOKEN_EXPIRED = "token expired"
    DISCONNECT = "disconnect"
    CLIENT_GONE = "client gone"


def poll_body(messages: list[bytes], cursor: str, gaps: list[bytes]) -> bytes:
    """The answer's JSON, spliced from already-encoded messages (no re-encoding)."""
    return b"".join(
        (
            b'{"messages":[',
            b",".join(messages),
            b'],"cursor":',
            encode_json(cursor),
            b',"gaps":[',
            b",".join(gaps),
            b"]}",
        )
    )


class Poll:
    """One long poll, from its subscription to its answer (see the module docstring).

    ``timeout`` is the hold (seconds, > 0); ``expires_at`` the Unix time the request's token
    expires (None: no token, or one without expiry), converted with ``wall_now`` (the driver's
    ``time.time()`` read with ``now``).
    """

    __slots__ = ("_expires", "_room", "cursor", "deadline", "due", "gaps", "messages", "reason")

    def __init__(
        self, limit: int, timeout: float, now: float, expires_at: float | None = None, wall_now: float = 0.0
    ) -> None:
        self.messages: list[bytes] = []
        self.gaps: list[bytes] = []
        self.cursor = ""
        #: Whether the answer is due (the driver answers at the end of this loop iteration).
        self.due = False
        #: Why it is due (None while held).
        self.reason: Reason | None = None
        self._room = limit  # how many messages the answer takes; 0 once ended
        #: When to call :meth:`tick`: the hold timeout or the token's expiry, whichever is first.
        self.deadline = now + timeout
        self._expires = False
        if expires_at is not None and now + (expires_at - wall_now) < self.deadline:
            self.deadline = now + (expires_at - wall_now)
            self._expires = True

    def _become_due(self, reason: Reason) -> bool:
        if self.due:
            return False
        self.due = True
        self.reason = reason
        return True

    # the subscription's output (the stream subscriber's sink, through the driver) --------------

    def ready(self, cursor: str) -> None:
        """Where the poll starts: the cursor of an answer without messages."""
        self.cursor = cursor

    def publication(self, encoded: EncodedPublication, cursor: str, single: bool) -> bool:
        """A publication (``cursor``: the poll's cursor after it; ``single``: the poll is on one
        channel). The hot path: one append, the first one makes the answer due."""
        if len(self.messages) >= self._room:
            return False  # full (the cursor stays after the last message taken), or ended
        # On one channel, the NDJSON line minus its newline is the message: shared bytes.
        self.messages.append(encoded.ndjson[:-1] if single else encoded.with_cursor(cursor))
        self.cursor = cursor
        if self.due:
            return False
        self.due = True
        self.reason = Reason.NEWS
        return True

    def gap(self, notice: bytes, cursor: str) -> bool:
        """A gap (history lost), told in the answer's ``gaps``: ``notice`` is its JSON."""
        if not self._room:
            return False
        self.gaps.append(notice)
        self.cursor = cursor
        return self._become_due(Reason.NEWS)

    # the connection ---------------------------------------------------------------------------

    def tick(self, now: float) -> bool:
        """The driver's timer, armed for :attr:`deadline`: at or past it the answer is due (the
        hold timeout, or the token's expiry). Before it (a timer that fired early), nothing: arm
        it again for :attr:`deadline`."""
        if now < self.deadline:
            return False
        return self._become_due(Reason.TOKEN_EXPIRED if self._expires else Reason.TIMEOUT)

    def disconnect(self) -> bool:
        """The node ends the connection (drain, ``/api/disconnect``): answer with what it has."""
        return self._become_due(Reason.DISCONNECT)

    def peer_gone(self) -> bool:
        """The client went away: no answer (:meth:`end` gives None), leave at once. True when
        nothing was due yet (the driver then ends the poll as for any due answer)."""
        due = self._become_due(Reason.CLIENT_GONE)
        self.reason = Reason.CLIENT_GONE
        return due

    @property
    def gone(self) -> bool:
        """Whether the client went away (for the close log: ended by the client)."""
        return self.reason is Reason.CLIENT_GONE

    @property
    def closing(self) -> Disconnect | None:
        """Why the server ended the poll, when the machine chose it (the token's expiry: 4001),
        for the close log and metrics; the node's own disconnect records its reason itself."""
        return disconnect(CloseCode.TOKEN_EXPIRED) if self.reason is Reason.TOKEN_EXPIRED else None

    def end(self) -> bytes | None:
        """The answer's body (None: the client is gone, write nothing). Called once the driver
        has left the hub and the node; the poll takes nothing more."""
        self._room = 0
        self.due = True
        if self.reason is Reason.CLIENT_GONE:
            return None
        return poll_body(self.messages, self.cursor, self.gaps)


# short polling ----------------------------------------------------------------------------------


def merge_by_time(pages: Mapping[str, list[Publication]], limit: int) -> list[Publication]:
    """Up to ``limit`` publications, oldest first across channels, each channel in order."""
    heads = {ch: 0 for ch, pubs in pages.items() if pubs}
    merged: list[Publication] = []
    while heads and len(merged) < limit:
        channel = min(heads, key=lambda ch: (pages[ch][heads[ch]].time, ch))
        merged.append(pages[channel][heads[channel]])
        heads[channel] += 1
        if heads[channel] == len(pages[channel]):
            del heads[channel]
    return merged


def etag_of(cursor: str) -> str:
    """A short poll's ``ETag``: for a given URL the cursor names exactly one answer (the
    messages between the requested and the returned cursor)."""
    return '"' + hashlib.blake2b(cursor.encode(), digest_size=12).hexdigest() + '"'


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    tags = (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))
    return etag in tags


def short_poll_status(cursor: str, if_none_match: str | None) -> tuple[int, str]:
    """``(status, etag)`` of a short poll's answer whose cursor is ``cursor``: ``304`` (empty
    body) when ``If-None-Match`` names its ``ETag`` (or is ``*``), else ``200``."""
    etag = etag_of(cursor)
    return (304 if _etag_matches(if_none_match, etag) else 200), etag
