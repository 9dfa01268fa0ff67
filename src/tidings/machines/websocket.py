"""A WebSocket connection after its handshake, sans-I/O: every rule of its life, once for both
engines.

:class:`WebSocketMachine` takes the frames the server sends (publications, replies: the driver
encodes them), the client's events after the frame parser
(:mod:`tidings.core.wire.websocket`'s events: ASGI drivers make them from the server's
messages), the driver's measurements (:meth:`~WebSocketMachine.written`) and events
(:meth:`~WebSocketMachine.heard`, :meth:`~WebSocketMachine.tick`,
:meth:`~WebSocketMachine.close`, :meth:`~WebSocketMachine.drain`,
:meth:`~WebSocketMachine.gone`), and owns:

- the close handshake: the server's close frame goes after the frames pending, nothing after it;
  then the client has ``close_timeout`` (:func:`tidings.machines.backlog.close_timeout`) to
  take it and answer, else the connection is cut. A client's close is echoed with its code; a
  protocol error closes with its code; both end the connection without waiting;
- the slow-consumer rule (:class:`~tidings.machines.backlog.Backlog`, bytes) with its replay
  allowance: past ``outbox_bytes`` the connection closes with 4008, the frames pending dropped,
  the close frame last. The backlog is what the driver reports after its writes
  (:meth:`~WebSocketMachine.written`: the sockets engine's write buffer) or, with
  ``count_queue``, what waits here untaken (the ASGI writer awaits each send);
- keepalive: every ``ping_interval`` a ping if nothing was heard for half of it, and a close
  (1011) after ``idle_timeout`` with nothing heard. Without ``ping_interval`` (the ASGI engine:
  the server below pings and times out) neither applies;
- the client's messages: a text frame is a command, carried out one at a time and in order,
  with at most :data:`MAX_BACKLOG` waiting before reading pauses; over ``max_frame_bytes``
  1009; a binary frame 1003 (unless ``binary``: the echo endpoint);
- token expiry: when to wake (:meth:`Session.next_expiry
  <tidings.core.session.Session.next_expiry>`); then :class:`~tidings.core.session.Session`
  decides: close with 4001, or the subscriptions whose grants ended (returned by
  :meth:`~WebSocketMachine.tick` for the driver to leave and tell);
- the drain (1012), a command that failed (1011), and :meth:`~WebSocketMachine.close_info`.

Time: ``now`` is the driver's monotonic clock; :meth:`~WebSocketMachine.tick` and
:meth:`~WebSocketMachine.watch_expiry` also take ``wall_now`` (Unix s), which the token's
expiry is compared with. An input that starts the close without a clock (a slow consumer found
by :meth:`~WebSocketMachine.push`, :meth:`~WebSocketMachine.close`) sets :attr:`deadline` to
:data:`AT_ONCE`: the driver's timer then fires at once and the machine learns the time from
:meth:`~WebSocketMachine.tick`.

After each input the driver reads: :meth:`~WebSocketMachine.take` (the frames to write now; an
input that returned True made the first ones pending), :meth:`~WebSocketMachine.take_farewell`
(the close frame, once, after everything taken), :attr:`~WebSocketMachine.state`
(:data:`CLOSED`: close the socket; :data:`ABORTED`: cut it), :attr:`~WebSocketMachine.reading`
and :attr:`~WebSocketMachine.deadline` (when to call :meth:`~WebSocketMachine.tick` next; one
timer per connection).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from tidings.core.disconnect import CloseCode, Disconnect, disconnect
from tidings.core.session import Session
from tidings.core.wire.websocket import (
    OP_PING,
    OP_PONG,
    BinaryMessage,
    CloseReceived,
    Event,
    Ping,
    ProtocolError,
    TextMessage,
    encode_frame,
)
from tidings.machines.backlog import Backlog

__all__ = [
    "ABORTED",
    "AT_ONCE",
    "CLOSED",
    "CLOSING",
    "GONE",
    "MAX_BACKLOG",
    "OPEN",
    "WIRE_FRAMES",
    "ControlFrames",
    "WebSocketConfig",
    "WebSocketMachine",
]

#: Commands waiting behind the one being carried out before reading pauses.
MAX_BACKLOG = 32
#: A :attr:`~WebSocketMachine.deadline` that is already past: tick at once.
AT_ONCE = 0.0

# states, in order
OPEN = 0  #: frames flow both ways
CLOSING = 1  #: the server's close frame is due or out; the client's answer is awaited
NO_STATUS = 1005  #: logged for an empty close frame (RFC 6455 7.1.5)
ABNORMAL = 1006  #: logged for a client gone without a close frame
CLOSED = 2  #: the handshake is over: close the socket (once the farewell is written)
ABORTED = 3  #: the client took nothing within ``close_timeout``: cut the connection
GONE = 4  #: the connection is gone: nothing more to do

_NEVER = math.inf
_SLOW = disconnect(CloseCode.SLOW_CONSUMER)
_RESTART = disconnect(CloseCode.SERVICE_RESTART)
_EXPIRED = disconnect(CloseCode.TOKEN_EXPIRED)
_FAILED = disconnect(CloseCode.INTERNAL_ERROR)
_BINARY = disconnect(CloseCode.UNSUPPORTED_DATA)
_IDLE = disconnect(CloseCode.INTERNAL_ERROR, "keepalive timeout")

T = TypeVar("T", str, bytes)
T_co = TypeVar("T_co", str, bytes, covariant=True)


class _Closed(list[Any]):
    """:attr:`WebSocketMachine.pending` once the connection closes: it takes nothing."""

    __slots__ = ()

    def append(self, item: Any) -> None:
        return None


_CLOSED = _Closed()
_NONE: list[Any] = []  # shared, never appended to: an idle connection's empty lists


class ControlFrames(Protocol[T_co]):
    """The control frames a driver that owns the wire sends (see :data:`WIRE_FRAMES`)."""

    def ping(self, payload: bytes) -> T_co: ...

    def pong(self, payload: bytes) -> T_co: ...


class _WireFrames:
    def ping(self, payload: bytes) -> bytes:
        return encode_frame(OP_PING, payload)

    def pong(self, payload: bytes) -> bytes:
        return encode_frame(OP_PONG, payload)


#: RFC 6455 control frames (:func:`~tidings.core.wire.websocket.encode_frame`), for a driver
#: that writes frames itself.
WIRE_FRAMES: ControlFrames[bytes] = _WireFrames()


@dataclass(frozen=True, slots=True)
class WebSocketConfig:
    """The numbers of one connection's rules (built from the settings by the driver)."""

    #: A message longer than this closes with 1009.
    max_frame_bytes: int
    #: The slow-consumer limit (``limits.outbox_bytes``).
    outbox_bytes: int
    #: Seconds the client gets to take the close frame and answer it.
    close_timeout: float
    #: Seconds between keepalive checks; None: the server below keeps the connection alive.
    ping_interval: float | None = None
    #: Close (1011) after this many seconds with nothing heard (with ``ping_interval``).
    idle_timeout: float = _NEVER
    #: The backlog is what waits in this machine (True) or what :meth:`written` reports.
    count_queue: bool = False
    #: Binary messages are carried out like text (the echo endpoint), not refused with 1003.
    binary: bool = False


class WebSocketMachine(Backlog, Generic[T]):
    """One WebSocket connection (see the module docstring). ``T``: the driver's frames (bytes
    of the wire, or the text of a message). ``frames``: how to make a ping and a pong (None:
    the driver's server answers pings and sends its own)."""

    __slots__ = (
        "_config",
        "_due",
        "_farewell",
        "_frames",
        "_held",
        "_keep_at",
        "_last_heard",
        "_server_close",
        "_slow",
        "commands",
        "deadline",
        "peer_code",
        "pending",
        "queued",
        "reading",
        "running",
        "session",
        "state",
    )

    def __init__(
        self,
        config: WebSocketConfig,
        now: float,
        frames: ControlFrames[T] | None = None,
        session: Session | None = None,
    ) -> None:
        self._config = config
        self._frames: ControlFrames[T] | None = frames
        self.session = session
        # the slow-consumer rule is this machine's base, not a member object: one object less
        # per idle connection
        Backlog.__init__(self, config.outbox_bytes)
        #: Frames to write, in order (:meth:`take`). The hot path (a driver that measures its
        #: backlog itself) may append to it directly, and schedule a write when its length
        #: becomes 1: once the connection closes, it is a list that takes nothing.
        self.pending: list[T] = []
        #: What was pending when the connection began to close (shared empty list until then:
        #: an idle connection's memory counts).
        self._held: list[T] = _NONE
        self.queued = 0  # bytes in ``pending`` (with ``count_queue``)
        self.state = OPEN
        self._farewell: tuple[int | None, str] | None = None
        self._server_close: tuple[int, str] | None = None
        #: The client's close code, if the client closed first.
        self.peer_code: int | None = None
        # 0; 1: closed by the slow-consumer rule; 2: and the driver was told (take_overflow).
        # One slot for both: an idle connection's memory counts.
        self._slow = 0
        #: Messages waiting to be carried out (:meth:`next_command`): a list, not a deque, as
        #: an empty deque costs every idle connection 600 bytes; at most MAX_BACKLOG wait.
        self.commands: list[str | bytes] = _NONE
        self.running = False
        #: Whether the driver should read from the client (False: pause reading).
        self.reading = True
        self._last_heard = now
        self._keep_at = _NEVER if config.ping_interval is None else now + config.ping_interval
        # open: when the session's next expiry falls; closing: when the connection is cut (one
        # slot for both, as an idle connection's memory counts)
        self._due = _NEVER
        #: When to call :meth:`tick` next (the driver's clock); None: no timer.
        self.deadline: float | None = None
        self._schedule()

    # frames to the client ----------------------------------------------------------------------

    def push(self, frame: T) -> bool:
        """Send ``frame`` after everything before it (dropped once closing). True: it is the
        first pending (write now, or schedule the write), or the connection began to close."""
        if self.state:
            return False
        pending = self.pending
        pending.append(frame)
        if self._config.count_queue:
            self.queued += len(frame)
            if self.overflows(self.queued):
                self._overflow()
                return True
        return len(pending) == 1

    def replay(self, frame: T) -> bool:
        """A frame of a resume's replay: bounded by history, allowed over the outbox limit."""
        if self.state:
            return False
        self.allow(len(frame))
        pending = self.pending
        pending.append(frame)
        if self._config.count_queue:
            self.queued += len(frame)
        return len(pending) == 1

    def take(self) -> list[T]:
        """The frames to write now, in order (the caller's list; the driver then reports
        :meth:`written`)."""
        frames = self.pending
        if frames:
            self.pending = []
            self.queued = 0
            return frames
        frames = self._held  # closing: what was pending then
        if not frames:
            return []
        self._held = _NONE
        return frames

    def take_farewell(self) -> tuple[int | None, str] | None:
        """The close frame's ``(code, reason)`` (code None: an empty close frame), once, when
        every frame before it has been taken; else None."""
        farewell = self._farewell
        if farewell is None or self.pending or self._held:
            return None
        self._farewell = None
        return farewell

    def take_overflow(self) -> bool:
        """True once after the slow-consumer rule closed the connection (for the metric)."""
        if self._slow == 1:
            self._slow = 2
            return True
        return False

    def written(self, backlog: int) -> bool:
        """After a write: ``backlog`` bytes are not yet taken by the client. True: it is a slow
        consumer, and the connection began to close."""
        if self.state == OPEN and self.overflows(backlog):
            self._overflow()
            return True
        return False

    @property
    def slow(self) -> bool:
        """The connection was closed by the slow-consumer rule."""
        return self._slow > 0

    def _overflow(self) -> None:
        self._slow = 1
        self.pending = []  # what the client could not take is dropped; the close goes last
        self.queued = 0
        self._close(int(_SLOW.code), _SLOW.reason)

    # the client ----------------------------------------------------------------------------------

    def heard(self, now: float) -> None:
        """Bytes arrived from the client (keepalive)."""
        self._last_heard = now

    def receive(self, event: Event) -> None:
        """One event of the frame parser (a Pong is the driver's: flow control)."""
        state = self.state
        if state:
            # after the server's close frame the client's messages are not read; its close (or
            # its giving up) ends the handshake
            if state == CLOSING and isinstance(event, CloseReceived | ProtocolError):
                self._end()
            return
        if isinstance(event, TextMessage):
            self._message(event.text)
        elif isinstance(event, Ping):
            if self._frames is not None:
                self.push(self._frames.pong(event.payload))
        elif isinstance(event, CloseReceived):
            # an empty close frame is logged as "no status received" (RFC 6455 7.1.5)
            self.peer_code = NO_STATUS if event.code is None else event.code
            self._farewell = (event.code, "")  # the echo, then the end
            self._end()
        elif isinstance(event, ProtocolError):
            self._close(event.code, event.reason)
            self._end()
        elif isinstance(event, BinaryMessage):
            if self._config.binary:
                self._message(event.data)
            else:
                self.close(_BINARY)

    def _message(self, message: str | bytes) -> None:
        limit = self._config.max_frame_bytes
        if len(message) > limit:
            self.close(disconnect(CloseCode.MESSAGE_TOO_BIG, f"frame over {limit} bytes"))
            return
        commands = self.commands
        if commands is _NONE:
            self.commands = commands = []
        commands.append(message)
        if len(commands) >= MAX_BACKLOG:
            self.reading = False

    def start_commands(self) -> bool:
        """True (once until :meth:`next_command` says None): start carrying out the messages
        waiting, one at a time (the driver's task or loop calls :meth:`next_command`)."""
        if self.running or not self.commands or self.state:
            return False
        self.running = True
        return True

    def next_command(self) -> str | bytes | None:
        """The next message to carry out, or None: none left (or closing), stop."""
        commands = self.commands
        if commands and not self.state:
            message = commands.pop(0)
            if len(commands) < MAX_BACKLOG:
                self.reading = True
            return message
        self.running = False
        # none left (or closing: never carried out): an idle connection keeps no list of its own
        self.commands = _NONE
        return None

    def failed(self) -> None:
        """The command being carried out failed (a bug, not the client's): 1011."""
        self.running = False
        self.close(_FAILED)

    # the server ----------------------------------------------------------------------------------

    def close(self, reason: Disconnect) -> bool:
        """The server closes the connection (the first reason wins). True if this began it."""
        if self.state:
            return False
        self._close(int(reason.code), reason.reason)
        return True

    def drain(self) -> bool:
        """The server shuts down: the client is told to reconnect (1012)."""
        return self.close(_RESTART)

    def _close(self, code: int, reason: str, now: float | None = None) -> None:
        self._server_close = (code, reason)
        self._farewell = (code, reason)
        self._stop()
        self.state = CLOSING
        self.commands.clear()
        self.reading = True  # the client's answer is to be read
        self._due = _NEVER if now is None else now + self._config.close_timeout
        self._schedule()

    def _stop(self) -> None:
        """Nothing more is queued: what is pending is held for the close frame to follow."""
        if self.state == OPEN:
            self._held = self.pending
            self.pending = _CLOSED
            self.queued = 0

    def _end(self) -> None:
        """The close handshake is over (or skipped): close the socket once the farewell is out;
        cut it if that takes longer than ``close_timeout``."""
        self._stop()
        self.state = CLOSED
        self.commands.clear()
        self._schedule()

    # time --------------------------------------------------------------------------------------

    def watch_expiry(self, now: float, wall_now: float) -> None:
        """The session's token or grants changed: wake at the next expiry."""
        if self.state:
            return  # closing (a command that ended after the close began): only the cut is timed
        expires = self.session.next_expiry() if self.session is not None else None
        self._due = _NEVER if expires is None else now + max(0.0, expires - wall_now)
        self._schedule()

    def tick(self, now: float, wall_now: float) -> list[str]:
        """The timer fired (at or after :attr:`deadline`). Returns the channels whose
        subscription-token grants ended (the driver leaves them and tells the client)."""
        state = self.state
        if state >= ABORTED:
            return []
        if state:
            if self._due == _NEVER:
                self._due = now + self._config.close_timeout
            elif now >= self._due:
                self._abort()
                return []
            self._schedule()
            return []
        ended: list[str] = []
        if now >= self._due:
            session = self.session
            assert session is not None  # an expiry is watched only with a session
            if session.expired(wall_now):
                self._close(int(_EXPIRED.code), _EXPIRED.reason, now)
                return []
            ended = session.expire_grants(wall_now)
            # a timer may fire a little early (uvloop rounds to milliseconds): then this re-arms
            self.watch_expiry(now, wall_now)
        if now >= self._keep_at:
            self._keepalive(now)
        else:
            self._schedule()
        return ended

    def _keepalive(self, now: float) -> None:
        config = self._config
        interval = config.ping_interval
        assert interval is not None
        idle = now - self._last_heard
        remaining = config.idle_timeout - idle
        if remaining <= 0:
            self._close(int(_IDLE.code), _IDLE.reason, now)
            return
        if idle >= interval / 2 and self._frames is not None:
            self.push(self._frames.ping(b""))
        self._keep_at = now + min(interval, remaining)
        self._schedule()

    def _schedule(self) -> None:
        state = self.state
        if state == OPEN:
            when = min(self._keep_at, self._due)
        else:  # closing or closed: nothing schedules a connection aborted or gone
            when = AT_ONCE if self._due == _NEVER else self._due
        self.deadline = None if when == _NEVER else when

    def _abort(self) -> None:
        self.state = ABORTED
        self._held = _NONE
        self._farewell = None
        self.deadline = None

    def gone(self, code: int | None = None) -> None:
        """The connection is gone (``code``: the client's close code, if the driver's server
        received one; None: the client vanished without a close frame, logged as 1006, abnormal
        closure, RFC 6455 7.1.5)."""
        if self.state == OPEN:
            self.peer_code = ABNORMAL if code is None else code
        self._stop()
        self.state = GONE
        self._held = _NONE
        self.commands.clear()
        self._farewell = None
        self.deadline = None

    def close_info(self) -> tuple[int | None, str, str]:
        """``(code, reason, by)`` for the node's close log line and metrics."""
        if self._server_close is not None:
            return self._server_close[0], self._server_close[1], "server"
        return self.peer_code or int(CloseCode.NORMAL), "", "client"
