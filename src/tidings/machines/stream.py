"""An HTTP stream (``GET /sse``, ``GET /stream``), sans-I/O: every rule of a stream's life, once
for both engines.

:class:`StreamMachine` takes what the stream's subscription produces (``ready``, gaps,
publications: the :class:`~tidings.transports.http_common.Sink` calls, forwarded by the driver),
the driver's measurements (:meth:`~StreamMachine.written`) and events (:meth:`~StreamMachine.open`,
:meth:`~StreamMachine.tick`, :meth:`~StreamMachine.disconnect`, :meth:`~StreamMachine.drain`,
:meth:`~StreamMachine.peer_gone`), and owns:

- the heartbeat schedule: a tick every ``heartbeat / 2`` beats if nothing was written since the
  tick before, so no two writes of an idle stream are more than ``heartbeat`` apart (plus the
  loop's latency) and a proxy whose idle timeout is above the setting never cuts it; an idle
  stream's beats come every ``heartbeat``. (Ticking every ``heartbeat`` would let up to twice
  that pass.)
- the slow-consumer rule (:class:`~tidings.machines.backlog.Backlog`, bytes only) with its replay
  allowance: what is produced before the stream goes live (its ``ready``, gaps and a resume's
  replay) does not count. The backlog is the bytes the peer has not taken: those produced and
  not yet handed to the driver, plus what the driver last reported as not yet sent
  (:meth:`~StreamMachine.written`); with ``StreamConfig.count_pending`` False (a driver that
  takes what waits within the loop iteration that produced it: the sockets engine) live
  publications count once reported, not as they wait;
- the end: ``sse.max_duration``, the token's expiry, a drain (1012), the node's disconnect, an
  overflow (4008, the pending data dropped); the farewell notice last, after which the
  connection is cut if its peer has not taken everything within ``close_timeout``;
- a compressed body (``Content-Encoding``, :class:`~tidings.core.wire.content_coding.StreamCoding`,
  given to the machine when the client accepts it and ``sse.compression`` allows it): every
  notice, heartbeat and publication becomes its own segment as it is produced (a publication's
  shared by every stream that sends the same bytes; chained to the previous publication when
  that was the stream's last event), the header goes out with the first bytes
  and the trailer after the farewell. The backlog counts compressed bytes, what the peer must
  take.

Time is the driver's monotonic clock (``now``); the token's wall-clock expiry is converted by
the driver into seconds from now (``expires_in`` of :meth:`~StreamMachine.open`).

The driver, after each input, reads: :meth:`~StreamMachine.data_to_send` (whenever an input
returned True: the first bytes pending, or the end), :attr:`~StreamMachine.deadline` (when to
call :meth:`~StreamMachine.tick` next; one timer per stream), :attr:`~StreamMachine.ending`
(then :meth:`~StreamMachine.farewell` gives the last bytes) and :attr:`~StreamMachine.abort`
(cut the connection now).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from tidings.core.disconnect import CloseCode, Disconnect, disconnect
from tidings.core.events import Gap
from tidings.core.position import Position
from tidings.core.wire.content_coding import StreamCoding
from tidings.core.wire.frames import EncodedPublication
from tidings.machines.backlog import Backlog

__all__ = ["TIME_LIMIT", "Framing", "StreamConfig", "StreamMachine"]

#: The farewell at ``sse.max_duration``.
TIME_LIMIT = disconnect(CloseCode.GOING_AWAY, "stream time limit: reconnect and resume")
_RESTART = disconnect(CloseCode.SERVICE_RESTART)
_EXPIRED = disconnect(CloseCode.TOKEN_EXPIRED)
_SLOW = disconnect(CloseCode.SLOW_CONSUMER)
_GONE = (int(CloseCode.GOING_AWAY), "client went away", "client")
# Before the stream is live nothing counts against the limit (see StreamMachine.open).
_UNBOUNDED = math.inf

# states
_SUBSCRIBING, _LIVE, _ENDING, _CLOSED, _DONE = range(5)


class Framing(Protocol):
    """How one streaming transport turns notices and publications into bytes (pure)."""

    content_type: bytes
    heartbeat: bytes
    #: What opens the ``ready`` notice (SSE: its ``retry:`` field, in the same block).
    preamble: bytes

    def ready(self, positions: Mapping[str, Position], cursor: str) -> bytes: ...

    def gap(self, gap: Gap, cursor: str) -> bytes: ...

    def publication(self, encoded: EncodedPublication, cursor: str, single: bool) -> bytes: ...

    def farewell(self, reason: Disconnect) -> bytes: ...


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """A stream's numbers (from ``Settings``: ``tidings.transports.http_common.stream_config``)."""

    #: Most seconds an idle stream goes without a write (``sse.heartbeat``, > 0).
    heartbeat: float
    #: The slow-consumer limit (``limits.outbox_bytes``).
    outbox_bytes: int
    #: Seconds the peer gets to take the farewell before it is cut.
    close_timeout: float
    #: Seconds before the server ends the stream (``sse.max_duration``; 0: never).
    max_duration: float = 0.0
    #: Once live, the backlog counts each publication as it waits here (True), or only what
    #: :meth:`StreamMachine.written` reports (False): for a driver that takes what waits within
    #: the loop iteration that produced it (the sockets engine: what waits is bounded by one
    #: iteration, as for its WebSockets), which spares every publication a count.
    count_pending: bool = True


class StreamMachine:
    """One SSE or NDJSON stream (see the module docstring).

    Inputs that may give the driver something to do return True: the first bytes are pending
    (write them now or at the end of the loop iteration), or the stream is ending.
    """

    __slots__ = (
        "_backlog",
        "_buffered",
        "_coding",
        "_config",
        "_counting",
        "_cut_at",
        "_end_at",
        "_end_reason",
        "_framing",
        "_half",
        "_head",
        "_head_handed",
        "_last",
        "_limit",
        "_next_beat",
        "_pending",
        "_plain",
        "_state",
        "_unsent",
        "_wrote",
        "abort",
        "closing",
        "deadline",
        "gone",
        "overflowed",
    )

    def __init__(self, config: StreamConfig, framing: Framing, coding: StreamCoding | None = None) -> None:
        self._config = config
        self._framing = framing
        #: The body's Content-Encoding (None: identity) and its header, until written.
        self._coding = coding
        self._head = b"" if coding is None else coding.header()
        self._head_handed = b""  # handed to the driver, not yet reported written
        #: The last event, if it was a publication: the next publication may chain to it.
        self._last: bytes | None = None
        self._backlog = Backlog(config.outbox_bytes)
        self._limit = _UNBOUNDED
        #: Publications are counted as they wait: always before the stream is live (what it
        #: holds then is its allowance), then as ``count_pending`` says.
        self._counting = True
        #: Live, no content coding, publications not counted as they wait: a publication is
        #: an append (set by open, cleared when the stream ends).
        self._plain = False
        self._pending: list[bytes] = []
        #: Bytes the peer has not taken: pending here plus what the driver last reported.
        self._unsent = 0
        self._buffered = 0
        self._state = _SUBSCRIBING
        self._wrote = False
        self._half = config.heartbeat / 2
        self._next_beat = _UNBOUNDED
        self._end_at = _UNBOUNDED
        self._end_reason = TIME_LIMIT
        self._cut_at = _UNBOUNDED
        #: When to call :meth:`tick` next (the driver's clock), None: no timer.
        self.deadline: float | None = None
        #: Why the server ends the stream (None: it does not, or the client ended it).
        self.closing: Disconnect | None = None
        #: The client went away.
        self.gone = False
        #: The stream was ended as a slow consumer by the backlog rule (for the metric).
        self.overflowed = False
        #: Cut the connection now: the farewell was not taken within ``close_timeout``.
        self.abort = False

    # what the subscription produces (the Sink, through the driver) ------------------------------

    def ready(self, positions: Mapping[str, Position], cursor: str) -> bool:
        return self._push(self._framing.preamble + self._framing.ready(positions, cursor))

    def gap(self, gap: Gap, cursor: str) -> bool:
        return self._push(self._framing.gap(gap, cursor))

    def publication(self, encoded: EncodedPublication, cursor: str, single: bool) -> bool:
        # the hot path: one framing call (usually the shared pre-encoded bytes) and an append
        if self._plain:
            pending = self._pending
            pending.append(self._framing.publication(encoded, cursor, single))
            return len(pending) == 1
        if self._state > 1:  # past _LIVE (a literal rather than a global lookup)
            return False
        data = self._framing.publication(encoded, cursor, single)
        coding = self._coding
        if coding is not None:
            shared = encoded.deflated(data, coding.level, self._last)
            if shared is None:  # the stream's own bytes (several channels): its own chain
                data, self._last = coding.segment(data, self._last), data
            else:
                coding.taken(data)
                self._last = data
                data = shared
        pending = self._pending
        first = not pending
        pending.append(data)
        if self._counting:
            unsent = self._unsent = self._unsent + len(data)
            if unsent > self._limit:
                return self._check() or first
        return first

    def _push(self, data: bytes) -> bool:
        if self._state > _LIVE:
            return False
        if self._coding is not None:
            self._last = None
            data = self._coding.segment(data)
        pending = self._pending
        first = not pending
        pending.append(data)
        unsent = self._unsent = self._unsent + len(data)
        if unsent > self._limit:
            return self._check() or first
        return first

    # the driver's events -------------------------------------------------------------------------

    def open(self, now: float, expires_in: float | None = None) -> None:
        """The stream is live (its response head goes out now): what it holds so far is allowed
        on top of the limit, and its timers start. ``expires_in``: seconds until the token
        expires (the driver's conversion of its wall-clock ``expires_at``), None: no token."""
        if self._state != _SUBSCRIBING:
            return  # ended while subscribing: the driver writes the farewell at once
        self._state = _LIVE
        self._backlog.allow(self._unsent)
        self._limit = self._config.outbox_bytes
        self._counting = self._config.count_pending
        self._plain = self._coding is None and not self._counting
        self._next_beat = now + self._half
        if self._config.max_duration > 0:
            self._end_at = now + self._config.max_duration
        if expires_in is not None and now + max(0.0, expires_in) < self._end_at:
            self._end_at = now + max(0.0, expires_in)
            self._end_reason = _EXPIRED
        self.deadline = min(self._next_beat, self._end_at)

    def data_to_send(self) -> bytes:
        """The bytes pending (b"" if none), handed to the driver to write now."""
        pending = self._pending
        if not pending or self._state > 1:  # past _LIVE
            return b""
        data = b"".join(pending)  # one item: that item itself (bytes.join's own shortcut)
        pending.clear()
        self._unsent = self._buffered
        self._wrote = True
        if self._coding is not None:
            self._coding.handed()
            if self._head:
                data, self._head_handed, self._head = self._head + data, self._head, b""
        return data

    def written(self, backlog: int) -> bool:
        """After a write: ``backlog`` bytes the driver holds that the peer has not taken (the
        sockets engine's transport write buffer; 0 on ASGI once ``send`` returned). After the
        farewell, 0 means it was taken: nothing is left to cut. True: the stream is
        :attr:`ending` or :attr:`ended` (what a driver reads after each write, in one call on
        the hot path).

        The driver owes this report after each write of :meth:`data_to_send`'s bytes, and only
        then: a write the end of the stream interrupted (ASGI: a ``send`` cancelled while it
        waited for the socket, before writing) is not reported, and a compressed body's trailer
        does not count those bytes (its header, if they held it, goes out with the farewell)."""
        if self._coding is not None:
            self._coding.sent()
            self._head_handed = b""
        self._unsent += backlog - self._buffered
        self._buffered = backlog
        state = self._state
        if state == _CLOSED:
            if backlog == 0:
                self._state = _DONE
                self.deadline = None
            return True
        if state == 1:  # _LIVE (a literal: this is the hot path of every write)
            unsent = self._unsent
            backlog_rule = self._backlog
            # within the limit with no replay allowance left to end: Backlog.overflows would
            # say False and change nothing, so the common case spares the call
            if unsent <= self._limit and not backlog_rule.allowance:
                return False
            if not backlog_rule.overflows(unsent):
                return False
            self._overflow()
        return True  # ending (the overflow's farewell, or an end before this write) or ended

    def _check(self) -> bool:
        if self._backlog.overflows(self._unsent):
            self._overflow()
            return True
        return False

    def _overflow(self) -> None:
        self.overflowed = True
        self._end(_SLOW)

    def tick(self, now: float) -> None:
        """The timer fired (at or after :attr:`deadline`)."""
        state = self._state
        if state == _CLOSED:
            if now >= self._cut_at:
                self.abort = True
                self._state = _DONE
                self.deadline = None
            return
        if state != _LIVE:
            return
        if now >= self._end_at:
            self._end(self._end_reason)
            return
        if now >= self._next_beat:
            if self._wrote:
                self._wrote = False
            else:
                self._push(self._framing.heartbeat)
            self._next_beat = now + self._half
        self.deadline = min(self._next_beat, self._end_at)

    def disconnect(self, reason: Disconnect) -> bool:
        """The server ends the stream (the node's ``/api/disconnect``, a drain); the first reason
        wins. True if this began the end."""
        if self._state > _LIVE:
            return False
        self._end(reason)
        return True

    def drain(self) -> bool:
        """The server shuts down: the client is told to reconnect (1012)."""
        return self.disconnect(_RESTART)

    def peer_gone(self) -> None:
        """The client went away: nothing more is written. (After the farewell the server's
        end stands: the client has closed as told.)"""
        self._plain = False
        if self._state < _CLOSED:
            self.gone = True
        self._state = _DONE
        self._pending.clear()
        self.deadline = None

    def _end(self, reason: Disconnect) -> None:
        self.closing = reason
        self._state = _ENDING
        self._plain = False
        self.deadline = None
        if reason.code == CloseCode.SLOW_CONSUMER:
            # what the client could not take is dropped; the farewell goes behind what the
            # driver already holds
            self._pending.clear()
            self._unsent = self._buffered
            if self._coding is not None:
                self._coding.dropped()

    # the end ---------------------------------------------------------------------------------------

    @property
    def ending(self) -> bool:
        """The server ends the stream: write :meth:`farewell` and end the response."""
        return self._state == _ENDING

    @property
    def ended(self) -> bool:
        """Nothing more to write: the farewell is out, or the client is gone."""
        return self._state > _ENDING

    def farewell(self, now: float) -> bytes:
        """The last bytes of the response: what is pending, then the ``disconnect`` notice. The
        driver writes them, ends the response and reports :meth:`written`; if the peer has not
        taken everything by :attr:`deadline` (``close_timeout`` from now), :meth:`tick` says
        :attr:`abort`."""
        if self._state != _ENDING:
            return b""
        assert self.closing is not None
        coding = self._coding
        farewell = self._framing.farewell(self.closing)
        self._pending.append(farewell if coding is None else coding.segment(farewell))
        data = b"".join(self._pending)
        self._pending.clear()
        if coding is not None:
            coding.lost()  # handed, never reported written: never written
            coding.handed()
            coding.sent()
            data = b"".join((self._head or self._head_handed, data, coding.trailer()))
            self._head = self._head_handed = b""
        self._unsent = self._buffered
        self._state = _CLOSED
        self._cut_at = self.deadline = now + self._config.close_timeout
        return data

    def close_info(self) -> tuple[int | None, str, str]:
        """``(code, reason, by)`` for the node's close log line and metrics."""
        if self.gone:
            return _GONE
        if self.closing is not None:
            return int(self.closing.code), self.closing.reason, "server"
        return None, "", "client"
