from __future__ import annotations

from tidings.core.position import EPOCH_ALPHABET, Position, new_epoch


def test_position_to_dict_names_epoch_and_offset():
    assert Position("x7Kq", 42).to_dict() == {"epoch": "x7Kq", "offset": 42}


def test_new_epoch_is_deterministic_when_given_bytes():
    assert new_epoch(b"\x00" * 6) == "AAAAAAAA"


def test_new_epoch_is_eight_url_safe_characters_without_separators():
    for _ in range(50):
        epoch = new_epoch()
        assert len(epoch) == 8
        assert set(epoch) <= EPOCH_ALPHABET
        assert ":" not in epoch
        assert "." not in epoch


def test_new_epoch_differs_between_calls():
    assert len({new_epoch() for _ in range(20)}) == 20


def test_positions_compare_by_value():
    assert Position("a", 1) == Position("a", 1)
    assert Position("a", 1) != Position("b", 1)
