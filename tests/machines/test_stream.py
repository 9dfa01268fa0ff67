"""The HTTP stream machine (tidings.machines.stream) driven by events and fake time, no network.

The framing is a stand-in whose bytes say what they are, so the tests read which notice went
out where; the real framings are tested through the transports (tests/transports).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.core.disconnect import CloseCode, Disconnect, disconnect
from tidings.core.events import Gap
from tidings.core.position import Position
from tidings.core.wire.frames import EncodedPublication
from tidings.machines.stream import TIME_LIMIT, StreamConfig, StreamMachine

LIMIT = 100
CLOSE = 3.0


class Bytes:
    """A framing whose publications are the cursor's bytes (its length picks the size)."""

    content_type = b"test/plain"
    heartbeat = b"<hb>"
    preamble = b"<pre>"

    def ready(self, positions: Mapping[str, Position], cursor: str) -> bytes:
        return b"<ready>"

    def gap(self, gap: Gap, cursor: str) -> bytes:
        return b"<gap>"

    def publication(self, encoded: EncodedPublication, cursor: str, single: bool) -> bytes:
        return cursor.encode()

    def farewell(self, reason: Disconnect) -> bytes:
        return b"<bye %d>" % reason.code


NOTHING = cast(EncodedPublication, None)
GAP = Gap("c", "e", 5, 9, Position("e", 8))


def machine(heartbeat: float = 2.0, max_duration: float = 0.0) -> StreamMachine:
    return StreamMachine(
        StreamConfig(heartbeat=heartbeat, outbox_bytes=LIMIT, close_timeout=CLOSE, max_duration=max_duration),
        Bytes(),
    )


def pub(m: StreamMachine, size: int) -> bool:
    return m.publication(NOTHING, "p" * size, True)


def live(now: float = 0.0, **config: float) -> StreamMachine:
    m = machine(**config)
    m.ready({}, "c")
    m.open(now)
    assert m.data_to_send() == b"<pre><ready>"
    m.written(0)
    return m


# what a stream produces, and when the driver is woken ---------------------------------------


def test_the_ready_notice_opens_with_the_preamble_and_the_first_bytes_wake_the_driver() -> None:
    m = machine()
    assert m.ready({}, "c") is True
    assert m.gap(GAP, "c") is False  # already woken: one wake per batch
    assert pub(m, 3) is False
    m.open(0.0)
    assert m.data_to_send() == b"<pre><ready><gap>ppp"
    assert m.data_to_send() == b""
    assert pub(m, 1) is True
    assert m.data_to_send() == b"p"


def test_what_a_stream_produces_before_it_is_live_does_not_count() -> None:
    """A resume's replay, far past the limit, is neither cut nor counted once the stream is
    live, until the client has taken it."""
    m = machine()
    m.ready({}, "c")
    for _ in range(10):
        pub(m, 60)
    m.open(0.0)
    assert not m.ending
    replay = m.data_to_send()
    assert len(replay) == len(b"<pre><ready>") + 600
    m.written(550)  # the client has read a little: still within the allowance
    assert not m.ending
    pub(m, 50)  # 550 + 50 pending: within limit + allowance
    assert not m.ending
    m.data_to_send()
    m.written(LIMIT)  # back within the limit: the allowance is spent
    m.written(LIMIT + 1)
    assert m.ending and m.overflowed
    assert m.closing == disconnect(CloseCode.SLOW_CONSUMER)


def test_live_bytes_the_peer_has_not_taken_past_the_limit_end_the_stream_as_slow() -> None:
    m = live()
    assert pub(m, 40) is True
    m.data_to_send()
    m.written(60)  # the driver holds 60 unsent bytes
    assert pub(m, 40) is True
    assert pub(m, 1) is True  # 60 + 41 > 100: the end wakes the driver too
    assert m.ending and m.overflowed
    assert m.data_to_send() == b""  # what the client could not take is dropped
    assert pub(m, 1) is False and m.gap(GAP, "c") is False
    assert m.farewell(5.0) == b"<bye 4008>"


def test_a_publication_under_the_limit_with_bytes_pending_is_not_a_second_wake() -> None:
    m = live()
    m.written(90)
    assert pub(m, 5) is True
    assert pub(m, 5) is False  # 100: at the limit, not past it
    assert not m.ending


def test_without_count_pending_only_what_the_driver_reports_counts_once_live() -> None:
    """``count_pending=False`` (a driver that takes what waits within the loop iteration, the
    sockets engine): live publications are not counted as they wait, only the backlog reported
    after their write; what waits before the stream is live is still its allowance."""
    config = StreamConfig(heartbeat=2.0, outbox_bytes=LIMIT, close_timeout=CLOSE, count_pending=False)
    m = StreamMachine(config, Bytes())
    for _ in range(3):
        pub(m, 60)  # a replay before the stream is live: counted, then allowed
    m.open(0.0)
    m.data_to_send()
    m.written(180)  # within the allowance
    assert pub(m, 60) is True
    assert pub(m, 60) is False  # 300 bytes held: not counted until written
    assert not m.ending
    assert len(m.data_to_send()) == 120
    m.written(LIMIT)  # back within the limit: the allowance is spent
    assert not m.ending
    pub(m, 10)
    m.data_to_send()
    assert m.written(LIMIT + 1) is True
    assert m.ending and m.overflowed
    assert pub(m, 10) is False and m.data_to_send() == b""  # ended: nothing more is taken


def test_without_count_pending_a_stream_the_client_left_takes_nothing_more() -> None:
    config = StreamConfig(heartbeat=2.0, outbox_bytes=LIMIT, close_timeout=CLOSE, count_pending=False)
    m = StreamMachine(config, Bytes())
    m.open(0.0)
    assert pub(m, 10) is True
    m.peer_gone()
    assert pub(m, 10) is False and m.data_to_send() == b""


def test_a_write_report_past_the_limit_ends_the_stream() -> None:
    m = live()
    pub(m, 10)
    m.data_to_send()
    m.written(LIMIT + 1)
    assert m.ending and m.overflowed


# the heartbeat --------------------------------------------------------------------------------


def test_an_idle_stream_beats_every_heartbeat_and_a_written_one_does_not() -> None:
    m = live(heartbeat=2.0)  # the ready notice was written: that tick does not beat
    assert m.deadline == 1.0
    m.tick(1.0)
    assert m.data_to_send() == b""
    assert m.deadline == 2.0
    m.tick(2.0)  # nothing written since the tick before
    assert m.data_to_send() == b"<hb>"
    m.written(0)
    m.tick(3.0)  # the beat was a write
    assert m.data_to_send() == b""
    m.tick(4.0)
    assert m.data_to_send() == b"<hb>"


def test_an_early_tick_does_nothing_but_keep_the_deadline() -> None:
    m = live(heartbeat=2.0)
    m.tick(0.5)
    assert m.deadline == 1.0 and m.data_to_send() == b""


# the ends -----------------------------------------------------------------------------------


def test_max_duration_ends_the_stream_with_the_time_limit_notice() -> None:
    m = live(10.0, heartbeat=20.0, max_duration=5.0)
    assert m.deadline == 15.0
    m.tick(15.0)
    assert m.ending and m.closing == TIME_LIMIT and m.deadline is None
    assert m.farewell(15.0) == b"<bye 1001>"


def test_the_token_expiring_first_ends_the_stream_with_4001() -> None:
    m = machine(heartbeat=20.0, max_duration=5.0)
    m.open(10.0, expires_in=2.0)
    assert m.deadline == 12.0
    m.tick(12.0)
    assert m.closing == disconnect(CloseCode.TOKEN_EXPIRED)


def test_a_token_expiring_after_max_duration_changes_nothing() -> None:
    m = machine(heartbeat=20.0, max_duration=5.0)
    m.open(0.0, expires_in=60.0)
    m.tick(5.0)
    assert m.closing == TIME_LIMIT


def test_an_expired_token_ends_the_stream_at_once() -> None:
    m = machine()
    m.open(7.0, expires_in=-3.0)
    assert m.deadline == 7.0
    m.tick(7.0)
    assert m.closing == disconnect(CloseCode.TOKEN_EXPIRED)


def test_the_first_reason_wins_and_pending_data_goes_out_before_the_farewell() -> None:
    m = live()
    pub(m, 2)
    reason = disconnect(CloseCode.GOING_AWAY, "bye")
    assert m.disconnect(reason) is True
    assert m.drain() is False
    assert m.closing == reason and m.close_info() == (1001, "bye", "server")
    m.tick(100.0)  # an ending stream waits for its driver
    m.written(10)
    assert not m.ended
    assert m.farewell(1.0) == b"pp<bye 1001>"
    assert m.farewell(1.0) == b""


def test_a_drain_while_subscribing_ends_the_stream_once_it_opens() -> None:
    m = machine()
    m.ready({}, "c")
    assert m.drain() is True
    m.open(0.0)
    assert m.ending and m.deadline is None
    assert m.farewell(0.0) == b"<pre><ready><bye 1012>"
    assert m.deadline == CLOSE


def test_a_farewell_taken_at_once_leaves_nothing_to_cut() -> None:
    m = live()
    m.disconnect(disconnect(CloseCode.SERVICE_RESTART))
    m.farewell(1.0)
    m.written(0)
    assert m.ended and m.deadline is None
    m.tick(10.0)
    assert not m.abort


def test_a_farewell_not_taken_within_the_close_timeout_cuts_the_connection() -> None:
    m = live()
    m.disconnect(disconnect(CloseCode.SERVICE_RESTART))
    m.farewell(1.0)
    m.written(5)
    assert m.deadline == 1.0 + CLOSE
    m.tick(2.0)
    assert not m.abort and m.deadline == 1.0 + CLOSE
    m.tick(1.0 + CLOSE)
    assert m.abort and m.deadline is None


def test_the_client_going_away_ends_everything() -> None:
    m = live()
    pub(m, 3)
    m.peer_gone()
    assert m.ended and not m.ending and m.gone and m.deadline is None
    assert m.data_to_send() == b"" and m.farewell(0.0) == b""
    assert pub(m, 1) is False and m.disconnect(TIME_LIMIT) is False
    assert m.close_info() == (1001, "client went away", "client")


def test_a_client_that_leaves_after_the_farewell_was_sent_away_by_the_server() -> None:
    m = live()
    m.drain()
    m.farewell(0.0)
    m.peer_gone()
    assert not m.gone and m.deadline is None
    assert m.close_info() == (1012, "service restart: reconnect and resume", "server")


def test_a_stream_nobody_ended_has_no_close_code() -> None:
    assert machine().close_info() == (None, "", "client")


def test_opening_twice_changes_nothing() -> None:
    m = live(heartbeat=2.0)
    m.open(50.0)
    assert m.deadline == 1.0


# event sequences --------------------------------------------------------------------------------

events = st.lists(
    st.one_of(
        st.tuples(st.just("pub"), st.integers(1, 80)),
        st.tuples(st.just("gap"), st.just(0)),
        st.tuples(st.just("flush"), st.integers(0, 150)),
        st.tuples(st.just("tick"), st.integers(0, 4)),
        st.tuples(st.just("disconnect"), st.sampled_from([1001, 1012, 4001, 4008])),
        st.tuples(st.just("drain"), st.just(0)),
        st.tuples(st.just("gone"), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(
    replay=st.lists(st.integers(1, 80), max_size=5),
    steps=events,
    max_duration=st.sampled_from([0.0, 3.0]),
    expires=st.sampled_from([None, -1.0, 2.5]),
)
def test_any_sequence_of_events_keeps_the_stream_rules(
    replay: list[int], steps: list[tuple[str, int]], max_duration: float, expires: float | None
) -> None:
    """Whatever happens: nothing is written after the end, the farewell is the last thing
    written and the only one, a deadline is never in the past after a tick, a live stream ends
    as slow only past the limit, and the machine wakes its driver when it has bytes or ends."""
    m = machine(heartbeat=1.0, max_duration=max_duration)
    m.ready({}, "c")
    for size in replay:
        pub(m, size)
    now = 0.0
    m.open(now, expires)
    written: list[bytes] = []
    farewells = 0
    ended_at: int | None = None
    buffered = 0

    def drive() -> None:
        nonlocal farewells, ended_at
        if m.ending:
            last = m.farewell(now)
            assert last.endswith(b">") and b"<bye " in last
            written.append(last)
            farewells += 1
            ended_at = len(written)
            assert m.written(buffered) is True  # a write after the farewell: the stream is over

    for kind, value in steps:
        if kind == "pub":
            before = m.ended or m.ending
            woken = pub(m, value)
            assert not (before and woken)
            if m.ending and not before:
                assert woken  # the end wakes the driver
        elif kind == "gap":
            m.gap(GAP, "c")
        elif kind == "flush":
            data = m.data_to_send()
            if data:
                assert ended_at is None
                written.append(data)
                buffered = value
                was_ending = m.ending
                # what written() says is what a driver would read next: ending or ended
                assert m.written(value) is (m.ending or m.ended)
                if m.ending and not was_ending:
                    assert m.overflowed and value > LIMIT
        elif kind == "tick":
            now += value / 2
            m.tick(now)
            assert m.deadline is None or m.deadline >= now
        elif kind == "disconnect":
            m.disconnect(disconnect(CloseCode(value)))
        elif kind == "drain":
            m.drain()
        else:
            m.peer_gone()
        drive()
        if m.ended:
            assert m.data_to_send() == b""
    assert farewells <= 1
    if ended_at is not None:
        assert ended_at == len(written)  # the farewell is the last thing written
        if m.closing is not None and m.closing.code == CloseCode.SLOW_CONSUMER:
            assert written[-1].startswith(b"<bye 4008>")


@pytest.mark.parametrize("code", [1001, 4008])
def test_an_overflowing_farewell_drops_only_what_was_not_handed_over(code: int) -> None:
    m = live()
    pub(m, 7)
    m.disconnect(disconnect(CloseCode(code)))
    assert m.farewell(0.0) == (b"<bye 4008>" if code == 4008 else b"ppppppp<bye 1001>")
