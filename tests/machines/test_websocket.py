"""The WebSocket machine (tidings.machines.websocket) driven by events and fake time, no network.

Frames are short byte strings that say what they are; the control frames are the real ones
(:data:`~tidings.machines.websocket.WIRE_FRAMES`). The engines' drivers are tested through real
servers (tests/e2e/test_websocket.py, tests/fast, the engine conformance suite).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.core.commands import Subscribe
from tidings.core.disconnect import CloseCode, disconnect
from tidings.core.permissions import Capability, Credentials, NamespaceOptions, Namespaces
from tidings.core.session import Session
from tidings.core.wire.websocket import (
    OP_PING,
    OP_PONG,
    BinaryMessage,
    CloseReceived,
    Event,
    Ping,
    Pong,
    ProtocolError,
    TextMessage,
    encode_frame,
)
from tidings.machines.websocket import (
    ABORTED,
    AT_ONCE,
    CLOSED,
    CLOSING,
    GONE,
    MAX_BACKLOG,
    OPEN,
    WIRE_FRAMES,
    WebSocketConfig,
    WebSocketMachine,
)

T0 = 1000.0  # the driver's monotonic clock at the start
WALL = 1_700_000_000.0  # the wall clock at the start
CLOSE = 2.0
PING = 10.0
IDLE = 25.0
CONFIG = WebSocketConfig(
    max_frame_bytes=100, outbox_bytes=1000, close_timeout=CLOSE, ping_interval=PING, idle_timeout=IDLE
)
ASGI = WebSocketConfig(max_frame_bytes=100, outbox_bytes=1000, close_timeout=CLOSE, count_queue=True)
NAMESPACES = Namespaces({"secret": NamespaceOptions(private=True)})
EMPTY_PING = encode_frame(OP_PING, b"")


def machine(config: WebSocketConfig = CONFIG, session: Session | None = None) -> WebSocketMachine[bytes]:
    return WebSocketMachine(config, T0, WIRE_FRAMES, session)


def session(expires_in: float | None = None) -> Session:
    expires = None if expires_in is None else WALL + expires_in
    return Session(NAMESPACES, credentials=Credentials(user="alice", expires_at=expires))


def wire(m: WebSocketMachine[Any], farewell_first: bool = False) -> list[Any]:
    """What a driver writes now: the frames, then the close frame if it is due (asked for
    first or last: the machine gives it only after the frames)."""
    out: list[Any] = []
    for take_frames in [False, True, False] if farewell_first else [True, False]:
        if take_frames:
            out.extend(m.take())
        elif (farewell := m.take_farewell()) is not None:
            out.append(("close", *farewell))
    return out


# frames to the client ------------------------------------------------------------------------


def test_frames_go_in_order_and_the_first_pending_says_so():
    m = machine()
    assert m.push(b"a") is True  # write now (or at the end of the loop iteration)
    assert m.push(b"b") is False
    assert m.replay(b"c") is False
    assert m.take() == [b"a", b"b", b"c"]
    assert m.take() == []
    assert m.replay(b"d") is True
    assert wire(m) == [b"d"]


def test_the_close_frame_goes_after_the_pending_frames_and_nothing_after_it():
    m = machine()
    m.push(b"a")
    assert m.close(disconnect(CloseCode.TOKEN_EXPIRED)) is True
    assert m.state == CLOSING
    assert m.push(b"late") is False and m.replay(b"late") is False
    assert m.take_farewell() is None  # not before the frames pending
    assert m.take() == [b"a"]
    assert m.take_farewell() == (4001, disconnect(CloseCode.TOKEN_EXPIRED).reason)
    assert m.take_farewell() is None  # once
    assert m.close(disconnect(CloseCode.NORMAL)) is False  # the first reason wins
    assert m.drain() is False
    assert m.close_info() == (4001, disconnect(CloseCode.TOKEN_EXPIRED).reason, "server")


def test_the_client_gets_close_timeout_to_answer_then_the_connection_is_cut():
    m = machine()
    m.close(disconnect(CloseCode.NORMAL))
    assert m.deadline == AT_ONCE  # the machine has no clock: tick it at once
    assert m.tick(T0 + 1, WALL + 1) == []
    assert m.deadline == T0 + 1 + CLOSE
    m.tick(T0 + 2, WALL + 2)  # early
    assert m.state == CLOSING and m.deadline == T0 + 1 + CLOSE
    m.tick(T0 + 1 + CLOSE, WALL)
    assert m.state == ABORTED and m.deadline is None
    assert wire(m) == []  # the farewell is not written after the cut
    assert m.tick(T0 + 10, WALL) == []


def test_the_hot_path_may_append_to_pending_which_takes_nothing_once_closing():
    m = machine()
    m.pending.append(b"a")  # a driver's deliver: then a write is scheduled (its length is 1)
    m.receive(CloseReceived(1000, ""))
    m.pending.append(b"late")
    assert len(m.pending) == 0
    assert wire(m) == [b"a", ("close", 1000, "")]


def test_the_clients_answer_ends_the_handshake():
    m = machine()
    m.close(disconnect(CloseCode.NORMAL))
    wire(m)
    m.receive(TextMessage("ignored"))
    m.receive(Ping(b"ignored"))
    assert m.state == CLOSING and not m.commands and wire(m) == []
    m.receive(CloseReceived(1000, ""))
    assert m.state == CLOSED and wire(m) == []
    m.receive(CloseReceived(1000, ""))  # once closed, nothing changes
    assert m.state == CLOSED
    assert m.close_info() == (1000, "normal closure", "server")
    m.gone()
    assert m.state == GONE and m.close_info() == (1000, "normal closure", "server")


def test_a_protocol_error_after_the_close_frame_ends_the_handshake_too():
    m = machine()
    m.close(disconnect(CloseCode.NORMAL))
    m.receive(ProtocolError(1002, "bad"))
    assert m.state == CLOSED


# the client ----------------------------------------------------------------------------------


def test_a_client_close_is_echoed_with_its_code_and_ends_the_connection():
    m = machine()
    m.push(b"a")
    m.receive(CloseReceived(4321, "bye"))
    assert m.state == CLOSED
    assert wire(m) == [b"a", ("close", 4321, "")]
    assert m.close_info() == (4321, "", "client")
    assert m.deadline == AT_ONCE  # the socket's close is bounded too
    m.tick(T0, WALL)
    assert m.deadline == T0 + CLOSE


def test_an_empty_client_close_is_echoed_empty():
    m = machine()
    m.receive(CloseReceived(None, ""))
    assert wire(m) == [("close", None, "")]
    assert m.close_info() == (1005, "", "client")


def test_a_client_gone_without_a_close_frame_is_logged_as_abnormal():
    m = machine()
    m.gone()
    assert m.close_info() == (1006, "", "client")


def test_a_protocol_error_closes_with_its_code_at_once():
    m = machine()
    m.receive(ProtocolError(1007, "invalid UTF-8"))
    assert m.state == CLOSED
    assert wire(m) == [("close", 1007, "invalid UTF-8")]
    assert m.close_info() == (1007, "invalid UTF-8", "server")


def test_a_binary_message_closes_with_1003_and_a_big_one_with_1009():
    m = machine()
    m.receive(BinaryMessage(b"\x00"))
    assert wire(m) == [("close", 1003, disconnect(CloseCode.UNSUPPORTED_DATA).reason)]
    m = machine()
    m.receive(TextMessage("x" * 101))
    assert wire(m) == [("close", 1009, "frame over 100 bytes")]
    assert not m.commands


def test_the_echo_takes_binary_messages_as_commands():
    m = machine(WebSocketConfig(max_frame_bytes=100, outbox_bytes=1000, close_timeout=CLOSE, binary=True))
    m.receive(BinaryMessage(b"\x00"))
    assert m.start_commands() and m.next_command() == b"\x00"


def test_a_ping_is_answered_and_a_pong_left_to_the_driver():
    m = machine()
    m.receive(Ping(b"hi"))
    m.receive(Pong(b"token"))
    assert wire(m) == [encode_frame(OP_PONG, b"hi")]
    asgi: WebSocketMachine[str] = WebSocketMachine(ASGI, T0)
    asgi.receive(Ping(b"hi"))  # the server below answers
    assert wire(asgi) == []


def test_commands_are_carried_out_in_order_one_at_a_time():
    m = machine()
    assert m.start_commands() is False  # nothing to do
    m.receive(TextMessage("1"))
    m.receive(TextMessage("2"))
    assert m.start_commands() is True
    assert m.start_commands() is False  # already running
    assert m.next_command() == "1"
    m.receive(TextMessage("3"))
    assert m.start_commands() is False
    assert [m.next_command(), m.next_command(), m.next_command()] == ["2", "3", None]
    assert m.running is False
    m.receive(TextMessage("4"))
    assert m.start_commands() is True


def test_reading_pauses_while_too_many_commands_wait():
    m = machine()
    for i in range(MAX_BACKLOG + 2):
        m.receive(TextMessage(str(i)))
        assert m.reading is (i + 1 < MAX_BACKLOG)
    assert m.start_commands()
    assert m.next_command() == "0" and m.reading is False  # still MAX_BACKLOG + 1 waiting
    assert m.next_command() == "1" and m.reading is False
    assert m.next_command() == "2" and m.reading is True


def test_a_close_drops_the_waiting_commands_and_reads_the_answer():
    m = machine()
    for i in range(MAX_BACKLOG):
        m.receive(TextMessage(str(i)))
    assert m.reading is False and m.start_commands()
    m.close(disconnect(CloseCode.NORMAL))
    assert m.reading is True
    assert m.next_command() is None and m.running is False
    assert m.start_commands() is False


def test_a_failed_command_closes_with_1011():
    m = machine()
    m.receive(TextMessage("x"))
    assert m.start_commands() and m.next_command() == "x"
    m.failed()
    assert m.running is False
    assert wire(m) == [("close", 1011, disconnect(CloseCode.INTERNAL_ERROR).reason)]


# the slow consumer ---------------------------------------------------------------------------


def test_a_backlog_over_the_limit_closes_with_4008_dropping_what_is_pending():
    m = machine()
    m.push(b"a")
    assert m.written(1000) is False
    m.push(b"dropped")
    assert m.written(1001) is True
    assert m.state == CLOSING and m.slow
    assert wire(m) == [("close", 4008, disconnect(CloseCode.SLOW_CONSUMER).reason)]
    assert m.take_overflow() is True and m.take_overflow() is False
    assert m.written(5000) is False  # closing: nothing more to judge


def test_a_replay_is_allowed_over_the_limit_until_it_is_taken():
    m = machine()
    m.replay(b"r" * 1500)
    assert m.written(1500) is False
    assert m.written(900) is False  # the replay was taken: the allowance ends
    assert m.written(1001) is True


def test_on_asgi_the_backlog_is_what_waits_in_the_machine():
    m: WebSocketMachine[str] = WebSocketMachine(ASGI, T0)
    assert m.deadline is None  # the server below keeps the connection alive
    m.replay("r" * 1500)  # allowed
    assert m.push("a" * 10) is False
    assert m.take() == ["r" * 1500, "a" * 10]
    assert m.push("b" * 600) is True
    assert m.push("c" * 400) is False
    assert m.push("d") is True  # 1001 bytes wait: slow
    assert m.state == CLOSING and m.pending == []
    assert wire(m) == [("close", 4008, disconnect(CloseCode.SLOW_CONSUMER).reason)]
    assert m.take_overflow() is True


# keepalive -----------------------------------------------------------------------------------


def test_an_idle_client_is_pinged_and_closed_with_1011_if_it_stays_silent():
    m = machine()
    assert m.deadline == T0 + PING
    m.heard(T0 + 6)  # heard less than half an interval ago: no ping
    m.tick(T0 + PING, WALL)
    assert wire(m) == [] and m.deadline == T0 + 2 * PING
    m.tick(T0 + 2 * PING, WALL)
    assert wire(m) == [EMPTY_PING] and m.deadline == T0 + 3 * PING
    m.tick(T0 + 3 * PING, WALL)
    assert wire(m) == [EMPTY_PING]
    # the last check comes when the idle timeout is up, not an interval later
    assert m.deadline == T0 + 6 + IDLE
    m.tick(T0 + 6 + IDLE, WALL)
    assert m.state == CLOSING
    assert wire(m) == [("close", 1011, "keepalive timeout")]
    assert m.deadline == T0 + 6 + IDLE + CLOSE


def test_without_ping_frames_only_the_idle_rule_applies():
    m: WebSocketMachine[str] = WebSocketMachine(
        WebSocketConfig(
            max_frame_bytes=100, outbox_bytes=1000, close_timeout=CLOSE, ping_interval=PING, idle_timeout=IDLE
        ),
        T0,
    )
    m.tick(T0 + PING, WALL)
    assert wire(m) == []
    m.tick(T0 + 2 * PING, WALL)
    m.tick(T0 + IDLE, WALL)
    assert m.close_info() == (1011, "keepalive timeout", "server")


# token expiry --------------------------------------------------------------------------------


def test_the_token_expiry_closes_with_4001():
    m = machine(session=session(expires_in=5))
    assert m.deadline == T0 + PING  # not watched until told
    m.watch_expiry(T0, WALL)
    assert m.deadline == T0 + 5
    m.tick(T0 + 4.999, WALL + 4.999)  # a timer a little early: it wakes again at the expiry
    assert m.state == OPEN and m.deadline == pytest.approx(T0 + 5)
    m.tick(T0 + 5, WALL + 5)
    assert m.close_info() == (4001, disconnect(CloseCode.TOKEN_EXPIRED).reason, "server")
    assert m.deadline == T0 + 5 + CLOSE


def test_an_expired_grant_ends_the_subscriptions_it_alone_allowed():
    s = session(expires_in=60)
    s.grant("secret:x", frozenset({Capability.SUBSCRIBE}), WALL + 2)
    s.receive(Subscribe(1, "secret:x", None), WALL)
    m = machine(session=s)
    m.watch_expiry(T0, WALL)
    assert m.deadline == T0 + 2
    assert m.tick(T0 + 2, WALL + 2) == ["secret:x"]
    assert m.state == OPEN and m.deadline == T0 + PING
    m.tick(T0 + PING, WALL + PING)
    assert m.deadline == T0 + 2 * PING  # the connection token's expiry is further


def test_no_token_no_expiry():
    m = machine(session=session())
    m.watch_expiry(T0, WALL)
    assert m.deadline == T0 + PING
    m = machine()
    m.watch_expiry(T0, WALL)
    assert m.deadline == T0 + PING


# the end -------------------------------------------------------------------------------------


def test_a_drain_closes_with_1012():
    m = machine()
    assert m.drain() is True
    assert wire(m) == [("close", 1012, disconnect(CloseCode.SERVICE_RESTART).reason)]


def test_a_connection_gone_takes_nothing_more():
    m = machine(session=session(expires_in=5))
    m.push(b"a")
    m.gone(1001)
    assert m.state == GONE and m.deadline is None
    assert m.close_info() == (1001, "", "client")
    assert m.push(b"b") is False and wire(m) == []
    assert m.tick(T0 + 100, WALL + 100) == []
    m.watch_expiry(T0, WALL)  # a command that ends after the connection: no timer
    assert m.deadline is None
    m.gone()
    assert m.close_info() == (1001, "", "client")


# invariants over any sequence of events ------------------------------------------------------

EVENTS: list[Event] = [
    TextMessage("c"),
    TextMessage("x" * 101),
    BinaryMessage(b"b"),
    Ping(b"p"),
    Pong(b"q"),
    CloseReceived(1000, ""),
    CloseReceived(None, ""),
    ProtocolError(1002, "bad"),
]
step = st.one_of(
    st.tuples(st.just("push"), st.integers(1, 400)),
    st.tuples(st.just("append"), st.integers(1, 400)),  # the sockets driver's deliver
    st.tuples(st.just("replay"), st.integers(1, 2000)),
    st.tuples(st.just("written"), st.integers(0, 3000)),
    st.tuples(st.just("receive"), st.integers(0, len(EVENTS) - 1)),
    st.tuples(st.just("command"), st.integers(0, 3)),
    st.tuples(st.just("close"), st.sampled_from([CloseCode.NORMAL, CloseCode.TOKEN_EXPIRED])),
    st.tuples(st.just("drain"), st.just(0)),
    st.tuples(st.just("failed"), st.just(0)),
    st.tuples(st.just("heard"), st.just(0)),
    st.tuples(st.just("tick"), st.floats(0, 30)),
    st.tuples(st.just("gone"), st.just(0)),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(step, st.sampled_from(["no", "frames first", "close first"])), max_size=60),
    st.booleans(),
)
def test_nothing_is_written_after_the_close_frame_and_a_deadline_exists_while_open(
    steps: list[tuple[tuple[str, Any], str]], counted: bool
) -> None:
    config = ASGI if counted else CONFIG
    m: WebSocketMachine[bytes] = WebSocketMachine(
        WebSocketConfig(
            max_frame_bytes=100,
            outbox_bytes=1000,
            close_timeout=CLOSE,
            ping_interval=PING,
            idle_timeout=IDLE,
            count_queue=config.count_queue,
        ),
        T0,
        WIRE_FRAMES,
        session(expires_in=40),
    )
    m.watch_expiry(T0, WALL)
    now = T0
    out: list[Any] = []
    for (kind, arg), write in steps:
        if kind == "push":
            m.push(b"d" * arg)
        elif kind == "append":
            m.pending.append(b"a" * arg)
        elif kind == "replay":
            m.replay(b"r" * arg)
        elif kind == "written":
            m.written(arg)
        elif kind == "receive":
            m.receive(EVENTS[arg])
        elif kind == "command":
            if m.start_commands() or m.running:
                for _ in range(arg):
                    m.next_command()
        elif kind == "close":
            m.close(disconnect(arg))
        elif kind == "drain":
            m.drain()
        elif kind == "failed":
            m.failed()
        elif kind == "heard":
            m.heard(now)
        elif kind == "tick":
            deadline = m.deadline
            if deadline is not None:
                now = max(now, deadline) + arg / 100  # the timer fires at (or just after) it
                m.tick(now, WALL + now - T0)
                assert m.deadline is None or m.deadline > now  # never in the past after tick
        else:
            m.gone()
        if write != "no":  # a driver may write later (the end of the loop iteration)
            out.extend(wire(m, farewell_first=write == "close first"))
        if m.state == OPEN:
            assert m.deadline is not None  # keepalive, at least
        elif m.state in (CLOSING, CLOSED):
            assert m.deadline is not None  # the cut
        else:
            assert m.deadline is None
    out.extend(wire(m))  # what is left, at last
    closes = [i for i, item in enumerate(out) if isinstance(item, tuple)]
    assert len(closes) <= 1
    if closes:
        assert closes[0] == len(out) - 1  # the close frame is the last thing written
    if m.state != OPEN:
        assert m.push(b"late") is False and wire(m) == []
