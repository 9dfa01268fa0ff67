from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.core.events import Gap, Page, Publication
from tidings.core.history import History
from tidings.core.position import Position
from tidings.core.recovery import Recovered, Recovery, is_new_to, notice_concerns

from .helpers import EPOCH, OTHER_EPOCH, pub

CH = "chat:lobby"


def offsets(result: Recovered) -> list[int]:
    return [p.offset for p in result.publications]


def test_finish_without_since_sends_live_publications_after_the_position():
    recovery = Recovery(CH, None)
    for n in (3, 4, 5):
        recovery.buffer(pub(n))
    result = recovery.finish(Position(EPOCH, 4))
    assert result == Recovered(True, [pub(5)], Position(EPOCH, 5), None)
    assert recovery.buffered == []


def test_finish_without_since_or_live_publications_stays_at_the_position():
    assert Recovery(CH, None).finish(Position(EPOCH, 4)) == Recovered(True, [], Position(EPOCH, 4))


def test_finish_merges_history_then_live_publications_dropping_duplicates():
    recovery = Recovery(CH, Position(EPOCH, 1))
    for n in (3, 4, 5):
        recovery.buffer(pub(n))
    result = recovery.finish(Page([pub(2), pub(3), pub(4)], Position(EPOCH, 4)))
    assert offsets(result) == [2, 3, 4, 5]
    assert result.recovered is True
    assert result.gap is None
    assert result.position == Position(EPOCH, 5)


def test_finish_keeps_a_live_publication_that_skips_ahead_of_history():
    recovery = Recovery(CH, Position(EPOCH, 1))
    recovery.buffer(pub(6))
    result = recovery.finish(Page([pub(2)], Position(EPOCH, 2)))
    assert offsets(result) == [2, 6]


def test_finish_drops_live_publications_of_another_epoch():
    recovery = Recovery(CH, Position(EPOCH, 1))
    recovery.buffer(pub(9, epoch=OTHER_EPOCH))
    recovery.buffer(pub(3))
    result = recovery.finish(Page([pub(2)], Position(EPOCH, 2)))
    assert offsets(result) == [2, 3]
    assert result.position == Position(EPOCH, 3)


def test_finish_moves_the_position_to_history_read_after_the_position():
    # A broker may read the position first and the history a moment later.
    recovery = Recovery(CH, Position(EPOCH, 1))
    result = recovery.finish(Page([pub(2), pub(3)], Position(EPOCH, 2)))
    assert result.position == Position(EPOCH, 3)


def test_finish_after_a_gap_is_not_recovered_and_sends_survivors_then_live():
    recovery = Recovery(CH, Position(EPOCH, 1))
    recovery.buffer(pub(5))
    recovery.buffer(pub(6))
    gap = Gap(CH, EPOCH, 2, 4, Position(EPOCH, 5), [pub(4), pub(5)])
    result = recovery.finish(gap)
    assert result.recovered is False
    assert result.gap is gap
    assert offsets(result) == [4, 5, 6]
    assert result.position == Position(EPOCH, 6)


def test_finish_after_an_epoch_change_continues_from_the_present():
    recovery = Recovery(CH, Position(OTHER_EPOCH, 40))
    recovery.buffer(pub(3))
    gap = Gap(CH, EPOCH, 41, None, Position(EPOCH, 2), [])
    result = recovery.finish(gap)
    assert result.recovered is False
    assert offsets(result) == [3]
    assert result.position == Position(EPOCH, 3)


def test_finish_after_an_epoch_change_sends_the_new_epoch_from_its_first_offset_then_live():
    recovery = Recovery(CH, Position(OTHER_EPOCH, 40))
    recovery.buffer(pub(2))
    recovery.buffer(pub(3))
    gap = Gap(CH, EPOCH, 41, 1, Position(EPOCH, 2), [pub(1), pub(2)])
    result = recovery.finish(gap)
    assert (result.recovered, result.gap) == (False, gap)
    assert offsets(result) == [1, 2, 3]
    assert result.position == Position(EPOCH, 3)


def test_finish_ignores_history_of_another_epoch_for_the_position():
    recovery = Recovery(CH, Position(EPOCH, 0))
    result = recovery.finish(Page([pub(1, epoch=OTHER_EPOCH)], Position(EPOCH, 0)))
    assert result.position == Position(EPOCH, 0)


def test_finish_refuses_a_page_cut_short_by_its_limit():
    # Live publications after the cut would leave a silent hole: the caller must read it all.
    recovery = Recovery(CH, Position(EPOCH, 0))
    recovery.buffer(pub(9))
    with pytest.raises(ValueError, match="complete"):
        recovery.finish(Page([pub(1), pub(2)], Position(EPOCH, 8), more=True))


# properties ------------------------------------------------------------------------------------


def check_ordered(result: Recovered, *, exact: bool = False) -> None:
    got = offsets(result)
    assert got == sorted(set(got)), "duplicates or out-of-order offsets"
    assert all(p.epoch == result.position.epoch for p in result.publications)
    if result.publications:
        # the position is never behind what was sent (and is exactly its end when realistic)
        assert result.position.offset >= got[-1]
        if exact:
            assert result.position == result.publications[-1].position


@settings(max_examples=300, deadline=None)
@given(
    history=st.lists(st.integers(1, 30), max_size=12).map(lambda xs: sorted(set(xs))),
    live=st.lists(st.tuples(st.integers(1, 40), st.booleans()), max_size=20),
    current=st.integers(0, 30),
    kind=st.sampled_from(["page", "gap", "position"]),
)
def test_finish_never_yields_duplicates_or_out_of_order_offsets(
    history: list[int], live: list[tuple[int, bool]], current: int, kind: str
):
    recovery = Recovery(CH, None if kind == "position" else Position(EPOCH, 0))
    for offset, other in live:
        recovery.buffer(pub(offset, epoch=OTHER_EPOCH if other else EPOCH))
    pubs = [pub(n) for n in history]
    position = Position(EPOCH, current)
    answer: Page | Gap | Position
    if kind == "page":
        answer = Page(pubs, position)
    elif kind == "gap":
        answer = Gap(CH, EPOCH, 1, pubs[0].offset if pubs else None, position, pubs)
    else:
        answer = position
    check_ordered(recovery.finish(answer))


@settings(max_examples=300, deadline=None)
@given(
    total=st.integers(0, 30),
    size=st.integers(0, 10),
    data=st.data(),
)
def test_resume_through_history_and_live_is_gap_free_or_reports_the_gap(
    total: int, size: int, data: st.DataObject
):
    """A realistic interleaving: the subscriber registers at ``joined``, history is read at
    ``read`` (>= joined), live delivery lags so buffering starts at ``first_live`` (<= joined + 1)
    and ends at ``total``. The result is every publication after ``since`` exactly once, in
    order, or a gap followed by a gap-free tail."""
    joined = data.draw(st.integers(0, total), label="joined")
    read = data.draw(st.integers(joined, total), label="read")
    first_live = data.draw(st.integers(1, joined + 1), label="first_live")
    since = data.draw(st.integers(0, read + 2), label="since")
    h = History(CH, EPOCH, size, 0)
    everything: list[Publication] = []
    answer: Page | Gap | None = None
    for n in range(1, total + 1):
        everything.append(pub(n))
        h.append(everything[-1], 0)
        if n == read:
            answer = h.since(Position(EPOCH, since), max(1, size), 0)
    if answer is None:  # read before any publication
        answer = History(CH, EPOCH, size, 0).since(Position(EPOCH, since), max(1, size), 0)
    recovery = Recovery(CH, Position(EPOCH, since))
    for p in everything[first_live - 1 :]:
        recovery.buffer(p)
    result = recovery.finish(answer)
    check_ordered(result, exact=True)
    got = offsets(result)
    tail = got[-1] if got else result.position.offset
    if since > read:
        assert isinstance(answer, Gap)
    if result.recovered:
        assert got == list(range(since + 1, total + 1))
        assert result.position == Position(EPOCH, total)
    else:
        assert result.gap is not None
        assert result.gap.requested == since + 1
        # after the notice, nothing is lost silently: the tail runs without a hole to the end
        if got:
            assert got == list(range(got[0], total + 1))
        assert tail == max(total, result.position.offset)


def test_is_new_to_compares_offsets_within_one_epoch_only():
    at = Position(EPOCH, 3)
    assert [is_new_to(at, pub(n)) for n in (2, 3, 4)] == [False, False, True]
    assert is_new_to(at, pub(9, epoch=OTHER_EPOCH)) is False


def test_notice_concerns_a_subscriber_only_if_it_loses_something_after_its_position():
    at = Position(EPOCH, 5)
    gap = {"op": "gap", "epoch": EPOCH, "requested": 2}
    assert notice_concerns(at, {**gap, "available_from": 6}) is False
    assert notice_concerns(at, {**gap, "available_from": 7}) is True
    assert notice_concerns(at, {**gap, "available_from": None}) is True
    assert notice_concerns(at, {**gap, "epoch": OTHER_EPOCH, "available_from": 1}) is True
    assert notice_concerns(at, {"op": "join"}) is True
