from __future__ import annotations

from tidings.core.events import Gap, Page, Publication
from tidings.core.position import Position

from .helpers import EPOCH, pub


def test_publication_position_is_its_epoch_and_offset():
    assert pub(7).position == Position(EPOCH, 7)


def test_publication_to_dict_and_from_dict_round_trip():
    original = pub(3, data={"text": "hi", "list": [1, 2]}, event="typing", time=1700)
    as_dict = original.to_dict()
    assert list(as_dict) == ["channel", "offset", "epoch", "id", "time", "event", "data"]
    assert Publication.from_dict(as_dict) == original


def test_publication_from_dict_without_data_reads_none():
    value = pub(1).to_dict()
    del value["data"]
    assert Publication.from_dict(value).data is None


def test_a_page_is_complete_by_default():
    page = Page([pub(1)], Position(EPOCH, 1))
    assert page.more is False


def test_gap_to_dict_names_what_was_lost():
    gap = Gap("chat:lobby", EPOCH, 5, 9, Position(EPOCH, 12))
    assert gap.to_dict() == {"channel": "chat:lobby", "epoch": EPOCH, "requested": 5, "available_from": 9}
    assert gap.publications == []
