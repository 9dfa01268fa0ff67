"""The poll machine (tidings.machines.poll), driven with events and fake time, no network."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.core.helpers import pub
from tidings.core.wire.frames import EncodedPublication
from tidings.machines.poll import (
    Poll,
    Reason,
    etag_of,
    merge_by_time,
    poll_body,
    short_poll_status,
)

GAP = b'{"channel":"a","requested":1,"cursor":"g"}'


def encoded(offset: int, channel: str = "a") -> EncodedPublication:
    return EncodedPublication(pub(offset, channel=channel))


def held(limit: int = 10, timeout: float = 25.0, **kwargs: float) -> Poll:
    poll = Poll(limit, timeout, 100.0, **kwargs)
    poll.ready("c0")
    return poll


def answer(poll: Poll) -> dict[str, Any]:
    body = poll.end()
    assert body is not None
    parsed: dict[str, Any] = orjson.loads(body)
    return parsed


# when the answer is due ---------------------------------------------------------------------------


def test_a_held_poll_without_news_answers_nothing_with_its_starting_cursor() -> None:
    poll = held()
    assert not poll.due and poll.reason is None
    assert answer(poll) == {"messages": [], "cursor": "c0", "gaps": []}


def test_the_first_publication_makes_the_answer_due_once_and_later_ones_join_it() -> None:
    poll = held()
    assert poll.publication(encoded(1), "c1", True) is True
    assert poll.due and poll.reason is Reason.NEWS
    # the same loop iteration: no second "due", but the message joins the answer
    assert poll.publication(encoded(2), "c2", True) is False
    body = answer(poll)
    assert [m["offset"] for m in body["messages"]] == [1, 2]
    assert body["cursor"] == "c2"


def test_messages_of_one_channel_are_the_shared_ndjson_bytes() -> None:
    poll = held()
    one = encoded(1)
    poll.publication(one, one.token, True)
    poll.publication(encoded(1, "b"), "multi", False)
    assert poll.messages[0] == one.ndjson[:-1]
    assert orjson.loads(poll.messages[1])["cursor"] == "multi"


def test_past_the_limit_publications_are_left_and_the_cursor_stays_after_the_last_taken() -> None:
    poll = held(limit=2)
    for offset in (1, 2, 3):
        poll.publication(encoded(offset), f"c{offset}", True)
    body = answer(poll)
    assert len(body["messages"]) == 2
    assert body["cursor"] == "c2"


def test_a_gap_makes_the_answer_due_and_is_told() -> None:
    poll = held()
    assert poll.gap(GAP, "cg") is True
    assert poll.reason is Reason.NEWS
    assert poll.gap(GAP, "cg2") is False
    body = answer(poll)
    assert body["gaps"] == [orjson.loads(GAP), orjson.loads(GAP)]
    assert body["cursor"] == "cg2"


def test_the_timeout_is_due_at_the_deadline_not_before() -> None:
    poll = held(timeout=5)
    assert poll.deadline == 105.0
    assert poll.tick(104.9) is False and not poll.due  # a timer fired early: arm it again
    assert poll.tick(105.0) is True
    assert poll.reason is Reason.TIMEOUT and poll.closing is None
    assert poll.tick(106.0) is False  # due once
    assert answer(poll)["messages"] == []


def test_a_token_expiring_during_the_hold_is_the_deadline() -> None:
    # the token expires 3 s from now (wall clock 1000), the hold is 25 s
    poll = held(expires_at=1003.0, wall_now=1000.0)
    assert poll.deadline == pytest.approx(103.0)
    assert poll.tick(103.0) is True
    assert poll.reason is Reason.TOKEN_EXPIRED
    assert poll.closing is not None and poll.closing.code == 4001  # the close log's code
    assert answer(poll) == {"messages": [], "cursor": "c0", "gaps": []}


def test_a_token_expiring_after_the_hold_changes_nothing() -> None:
    poll = held(timeout=5, expires_at=2000.0, wall_now=1000.0)
    assert poll.deadline == 105.0
    assert poll.tick(105.0) is True
    assert poll.reason is Reason.TIMEOUT


def test_the_nodes_disconnect_answers_now_with_what_the_poll_has() -> None:
    poll = held()
    assert poll.disconnect() is True
    assert poll.reason is Reason.DISCONNECT
    assert poll.disconnect() is False
    assert answer(poll)["messages"] == []


def test_news_already_due_keeps_its_reason_on_a_disconnect() -> None:
    poll = held()
    poll.publication(encoded(1), "c1", True)
    assert poll.disconnect() is False
    assert poll.reason is Reason.NEWS
    assert len(answer(poll)["messages"]) == 1


def test_a_client_gone_gets_no_answer() -> None:
    poll = held()
    assert poll.peer_gone() is True
    assert poll.gone and poll.reason is Reason.CLIENT_GONE
    assert poll.end() is None


def test_a_client_gone_after_its_answer_became_due_gets_none_either() -> None:
    poll = held()
    poll.publication(encoded(1), "c1", True)
    assert poll.peer_gone() is False  # the answer is already scheduled
    assert poll.gone
    assert poll.end() is None


def test_an_ended_poll_takes_nothing_more() -> None:
    poll = held()
    first = poll.end()
    assert poll.publication(encoded(1), "c1", True) is False
    assert poll.gap(GAP, "cg") is False
    assert poll.messages == [] and poll.gaps == [] and poll.cursor == "c0"
    assert poll.end() == first


# invariants over event sequences ------------------------------------------------------------------

events = st.lists(
    st.one_of(
        st.tuples(st.just("publication"), st.booleans()),
        st.tuples(st.just("gap"), st.just(False)),
        st.tuples(st.just("tick"), st.floats(min_value=0, max_value=200)),
        st.tuples(st.just("disconnect"), st.just(False)),
        st.tuples(st.just("gone"), st.just(False)),
    ),
    max_size=30,
)


@given(events, st.integers(min_value=1, max_value=5))
def test_any_sequence_is_due_once_and_answers_what_it_took(
    sequence: list[tuple[str, object]], limit: int
) -> None:
    poll = held(limit=limit, timeout=50)
    dues = 0
    taken = 0
    for n, (kind, arg) in enumerate(sequence):
        if kind == "publication":
            before = len(poll.messages)
            dues += poll.publication(encoded(n + 1), f"c{n + 1}", bool(arg))
            taken += len(poll.messages) - before
        elif kind == "gap":
            dues += poll.gap(GAP, f"c{n + 1}")
        elif kind == "tick":
            assert isinstance(arg, float)
            dues += poll.tick(100.0 + arg)
        elif kind == "disconnect":
            dues += poll.disconnect()
        else:
            dues += poll.peer_gone()
    assert dues == (1 if poll.due else 0)  # the driver schedules the answer exactly once
    assert len(poll.messages) == taken <= limit
    gone = poll.gone
    body = poll.end()
    assert (body is None) == gone
    if body is not None:
        parsed = orjson.loads(body)
        assert len(parsed["messages"]) == taken
        assert parsed["cursor"] == poll.cursor
        if parsed["messages"]:
            assert parsed["messages"][-1]["offset"] > 0
    # after the end, nothing more is taken
    assert poll.publication(encoded(99), "late", True) is False
    assert len(poll.messages) == taken


# the answer's body --------------------------------------------------------------------------------


def test_the_body_splices_encoded_messages() -> None:
    assert orjson.loads(poll_body([b'{"a":1}', b'{"b":2}'], "cur", [GAP])) == {
        "messages": [{"a": 1}, {"b": 2}],
        "cursor": "cur",
        "gaps": [orjson.loads(GAP)],
    }


# short polling ------------------------------------------------------------------------------------


def test_merge_by_time_orders_channels_by_time_then_name_and_keeps_each_in_order() -> None:
    a = [pub(1, channel="a", time=5), pub(2, channel="a", time=9)]
    b = [pub(1, channel="b", time=5), pub(2, channel="b", time=6)]
    merged = merge_by_time({"b": b, "a": a, "empty": []}, 10)
    assert [(p.channel, p.offset) for p in merged] == [("a", 1), ("b", 1), ("b", 2), ("a", 2)]
    assert [(p.channel, p.offset) for p in merge_by_time({"a": a, "b": b}, 3)] == [
        ("a", 1),
        ("b", 1),
        ("b", 2),
    ]
    assert merge_by_time({}, 3) == []


def test_the_etag_names_the_cursor() -> None:
    assert etag_of("c1") == etag_of("c1") != etag_of("c2")
    assert etag_of("c1").startswith('"') and etag_of("c1").endswith('"')


@pytest.mark.parametrize(
    ("if_none_match", "status"),
    [
        (None, 200),
        ("", 200),
        ("*", 304),
        (" * ", 304),
        ("SAME", 304),
        ("W/SAME", 304),
        ('"other", SAME', 304),
        ('"other"', 200),
    ],
)
def test_a_short_poll_is_not_modified_when_if_none_match_names_its_etag(
    if_none_match: str | None, status: int
) -> None:
    etag = etag_of("cur")
    header = None if if_none_match is None else if_none_match.replace("SAME", etag)
    assert short_poll_status("cur", header) == (status, etag)
