from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.core.events import Gap, Page, Publication
from tidings.core.history import History, resolve_since
from tidings.core.position import Position

from .helpers import EPOCH, OTHER_EPOCH, pub

CH = "chat:lobby"


def history(size: int = 10, ttl: float = 0, offset: int = 0) -> History:
    return History(CH, EPOCH, size, ttl, offset)


def filled(count: int, size: int = 10, ttl: float = 0, step_ms: int = 0) -> History:
    h = history(size, ttl)
    for n in range(1, count + 1):
        h.append(pub(n, time=n * step_ms), now_ms=n * step_ms)
    return h


# resolve_since --------------------------------------------------------------------------------


def test_resolve_since_returns_gap_with_the_new_epoch_from_its_first_offset_when_epoch_changed():
    window = [pub(1), pub(2)]
    answer = resolve_since(CH, Position(OTHER_EPOCH, 40), Position(EPOCH, 2), window, 10)
    assert answer == Gap(CH, EPOCH, 41, 1, Position(EPOCH, 2), [pub(1), pub(2)])


def test_resolve_since_after_an_epoch_change_hands_over_at_most_limit_publications():
    window = [pub(1), pub(2), pub(3)]
    answer = resolve_since(CH, Position(OTHER_EPOCH, 1), Position(EPOCH, 3), window, 2)
    assert isinstance(answer, Gap)
    assert answer.publications == [pub(1), pub(2)]


def test_resolve_since_returns_gap_when_epoch_changed_and_history_is_empty():
    answer = resolve_since(CH, Position(OTHER_EPOCH, 4), Position(EPOCH, 0), [], 10)
    assert isinstance(answer, Gap)
    assert answer.available_from is None


def test_resolve_since_returns_gap_when_requested_is_ahead_of_the_channel():
    answer = resolve_since(CH, Position(EPOCH, 9), Position(EPOCH, 2), [pub(1), pub(2)], 10)
    assert isinstance(answer, Gap)
    assert (answer.requested, answer.available_from) == (10, 1)


def test_resolve_since_returns_an_empty_page_when_up_to_date():
    assert resolve_since(CH, Position(EPOCH, 2), Position(EPOCH, 2), [pub(1), pub(2)], 10) == Page(
        [], Position(EPOCH, 2)
    )


def test_resolve_since_returns_the_publications_after_the_position():
    answer = resolve_since(CH, Position(EPOCH, 1), Position(EPOCH, 3), [pub(1), pub(2), pub(3)], 10)
    assert answer == Page([pub(2), pub(3)], Position(EPOCH, 3), more=False)


def test_resolve_since_cuts_the_page_at_limit_and_says_there_is_more():
    answer = resolve_since(CH, Position(EPOCH, 0), Position(EPOCH, 3), [pub(1), pub(2), pub(3)], 2)
    assert answer == Page([pub(1), pub(2)], Position(EPOCH, 3), more=True)


def test_resolve_since_returns_gap_with_survivors_when_history_starts_later():
    answer = resolve_since(CH, Position(EPOCH, 1), Position(EPOCH, 5), [pub(4), pub(5)], 10)
    assert answer == Gap(CH, EPOCH, 2, 4, Position(EPOCH, 5), [pub(4), pub(5)])


def test_resolve_since_returns_gap_without_survivors_when_history_is_empty():
    answer = resolve_since(CH, Position(EPOCH, 1), Position(EPOCH, 5), [], 10)
    assert answer == Gap(CH, EPOCH, 2, None, Position(EPOCH, 5), [])


# History --------------------------------------------------------------------------------------


def test_history_starts_empty_at_its_offset():
    h = history(offset=7)
    assert len(h) == 0
    assert h.position == Position(EPOCH, 7)
    assert h.next_offset() == 8


def test_append_refuses_a_publication_out_of_order():
    h = history()
    with pytest.raises(ValueError, match="offset order"):
        h.append(pub(2), 0)


def test_append_refuses_a_publication_of_another_epoch():
    h = history()
    with pytest.raises(ValueError, match="offset order"):
        h.append(pub(1, epoch=OTHER_EPOCH), 0)


def test_history_keeps_the_last_size_publications():
    h = filled(5, size=3)
    assert len(h) == 3
    assert h.latest(10, 0) == [pub(3), pub(4), pub(5)]
    assert h.position == Position(EPOCH, 5)


def test_history_of_size_zero_keeps_nothing_but_counts_offsets():
    h = filled(4, size=0)
    assert len(h) == 0
    assert h.position == Position(EPOCH, 4)
    answer = h.since(Position(EPOCH, 2), 10, 0)
    assert answer == Gap(CH, EPOCH, 3, None, Position(EPOCH, 4), [])


def test_expire_drops_publications_older_than_ttl():
    h = filled(5, size=10, ttl=1, step_ms=400)  # times 400..2000
    h.expire(2500)  # horizon 1500: keeps 1600, 2000
    assert h.latest(10, 2500) == [pub(4, time=1600), pub(5, time=2000)]


def test_expire_keeps_a_publication_exactly_at_the_horizon():
    h = filled(2, size=10, ttl=1, step_ms=1000)
    h.expire(2000)
    assert len(h) == 2


def test_a_ttl_of_zero_keeps_publications_by_size_alone():
    h = filled(3, size=10, ttl=0, step_ms=1000)
    h.expire(10**12)
    assert len(h) == 3


def test_since_returns_gap_when_epoch_changed():
    h = filled(3)
    answer = h.since(Position(OTHER_EPOCH, 2), 10, 0)
    assert isinstance(answer, Gap)
    assert (answer.epoch, answer.requested, answer.available_from) == (EPOCH, 3, 1)
    assert answer.position == Position(EPOCH, 3)
    assert answer.publications == [pub(1), pub(2), pub(3)]


def test_since_returns_the_publications_after_the_position():
    h = filled(5)
    assert h.since(Position(EPOCH, 3), 10, 0) == Page([pub(4), pub(5)], Position(EPOCH, 5))


def test_since_from_zero_returns_everything_while_history_is_complete():
    h = filled(3)
    assert h.since(Position(EPOCH, 0), 10, 0) == Page([pub(1), pub(2), pub(3)], Position(EPOCH, 3))


def test_since_the_latest_position_returns_an_empty_page():
    assert filled(3).since(Position(EPOCH, 3), 10, 0) == Page([], Position(EPOCH, 3))


def test_since_returns_gap_when_history_no_longer_reaches_back():
    h = filled(6, size=3)
    answer = h.since(Position(EPOCH, 1), 10, 0)
    assert answer == Gap(CH, EPOCH, 2, 4, Position(EPOCH, 6), [pub(4), pub(5), pub(6)])


def test_since_reaching_exactly_the_oldest_publication_is_a_page():
    h = filled(6, size=3)
    assert h.since(Position(EPOCH, 3), 10, 0) == Page([pub(4), pub(5), pub(6)], Position(EPOCH, 6))


def test_since_returns_gap_when_ttl_expired_the_publications():
    h = filled(3, size=10, ttl=1, step_ms=100)
    answer = h.since(Position(EPOCH, 0), 10, now_ms=5000)
    assert answer == Gap(CH, EPOCH, 1, None, Position(EPOCH, 3), [])


def test_since_returns_gap_when_requested_offset_is_ahead():
    answer = filled(3).since(Position(EPOCH, 8), 10, 0)
    assert isinstance(answer, Gap)
    assert answer.requested == 9


def test_since_on_an_empty_history_from_its_position_is_an_empty_page():
    assert history().since(Position(EPOCH, 0), 10, 0) == Page([], Position(EPOCH, 0))


def test_latest_returns_the_last_limit_publications_in_order():
    h = filled(5)
    assert h.latest(2, 0) == [pub(4), pub(5)]
    assert h.latest(0, 0) == []
    assert h.latest(-1, 0) == []


# the reference model ---------------------------------------------------------------------------


@dataclass
class Model:
    """History as a plain list: every publication ever appended, filtered on read."""

    size: int
    ttl: float
    all: list[Publication] = field(default_factory=list)
    now: int = 0

    def kept(self) -> list[Publication]:
        kept = self.all[-self.size :] if self.size > 0 else []
        if self.ttl > 0:
            horizon = self.now - self.ttl * 1000
            kept = [p for p in kept if p.time >= horizon]
        return kept


steps = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 3000)),
        st.tuples(
            st.just("since"), st.integers(0, 3000), st.integers(-2, 40), st.booleans(), st.integers(1, 12)
        ),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(size=st.integers(0, 8), ttl=st.sampled_from([0, 0.5, 1, 3]), steps=steps)
def test_since_agrees_with_a_list_model(size: int, ttl: float, steps: list[tuple[object, ...]]):
    h = History(CH, EPOCH, size, ttl)
    model = Model(size, ttl)
    for step in steps:
        if step[0] == "append":
            advance = step[1]
            assert isinstance(advance, int)
            model.now += advance
            p = pub(h.next_offset(), time=model.now)
            h.append(p, model.now)
            model.all.append(p)
            continue
        _, advance, back, other_epoch, limit = step
        assert isinstance(advance, int)
        assert isinstance(back, int)
        assert isinstance(limit, int)
        model.now += advance
        latest = len(model.all)
        offset = max(0, latest - back)
        requested = Position(OTHER_EPOCH if other_epoch else EPOCH, offset)
        answer = h.since(requested, limit, model.now)
        kept = model.kept()
        assert answer.position == Position(EPOCH, latest)
        after = [p for p in kept if p.offset > offset]
        if other_epoch or offset > latest:
            assert isinstance(answer, Gap)
            assert answer.requested == offset + 1
            assert answer.available_from == (kept[0].offset if kept else None)
            assert answer.epoch == EPOCH
            # another epoch: what history still has; a position ahead: nothing comes after it
            assert answer.publications == (kept[:limit] if other_epoch else [])
        elif offset == latest or (after and after[0].offset == offset + 1):
            assert isinstance(answer, Page), answer
            assert answer.publications == after[:limit]
            assert answer.more == (len(after) > limit)
            # a complete page is exactly the publications after the position, no hole
            assert [p.offset for p in answer.publications] == list(
                range(offset + 1, offset + 1 + len(answer.publications))
            )
        else:
            assert isinstance(answer, Gap), answer
            assert answer.requested == offset + 1
            assert answer.available_from == (after[0].offset if after else None)
            assert answer.publications == after[:limit]
            assert answer.available_from is None or answer.available_from > offset + 1
        assert h.latest(100, model.now) == kept[-100:]
        assert len(h) == len(kept)
