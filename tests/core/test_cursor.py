from __future__ import annotations

import base64
import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.core.cursor import (
    MAX_CURSOR_LENGTH,
    cursor_position,
    decode_cursor,
    decode_cursors,
    encode_cursor,
    encode_token,
    positions_for,
)
from tidings.core.position import Position
from tidings.exceptions import InvalidCursor

from .strategies import channels, positions


def raw_token(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_a_token_is_unpadded_base64url_of_offset_epoch_channel():
    token = encode_token("chat:lobby", Position("x7Kq", 42))
    assert token == raw_token("42:x7Kq:chat:lobby")
    assert "=" not in token


def test_encode_cursor_joins_tokens_in_channel_order():
    cursor = encode_cursor({"b": Position("e", 2), "a": Position("e", 1)})
    assert cursor == f"{encode_token('a', Position('e', 1))}.{encode_token('b', Position('e', 2))}"


def test_decode_cursor_reads_a_channel_name_containing_colons():
    cursor = encode_token("user:42:inbox", Position("x7Kq", 7))
    assert decode_cursor(cursor) == {"user:42:inbox": Position("x7Kq", 7)}


def test_decode_cursors_keeps_the_later_offset_in_the_same_epoch():
    early = encode_token("c", Position("e", 3))
    late = encode_token("c", Position("e", 9))
    assert decode_cursors([late, early]) == {"c": Position("e", 9)}
    assert decode_cursors([early, late]) == {"c": Position("e", 9)}
    assert decode_cursor(f"{late}.{early}") == {"c": Position("e", 9)}


def test_decode_cursors_keeps_the_last_position_given_when_epochs_differ():
    old = encode_token("c", Position("old", 50))
    new = encode_token("c", Position("new", 2))
    assert decode_cursors([old, new]) == {"c": Position("new", 2)}
    assert decode_cursors([new, old]) == {"c": Position("old", 50)}


def test_decode_cursors_merges_different_channels():
    a, b = encode_token("a", Position("e", 1)), encode_token("b", Position("f", 2))
    merged = decode_cursors([a, b])
    assert merged == {"a": Position("e", 1), "b": Position("f", 2)}


def test_decode_cursors_of_nothing_is_empty():
    assert decode_cursors([]) == {}


@pytest.mark.parametrize(
    ("cursor", "reason"),
    [
        ("", "empty or too long"),
        ("A" * (MAX_CURSOR_LENGTH + 1), "empty or too long"),
        ("A", "not a tidings cursor"),  # bad padding
        (base64.urlsafe_b64encode(b"\xff\xfe").decode(), "not a tidings cursor"),  # not UTF-8
        (raw_token("42-x7Kq-chat"), "not a tidings cursor"),  # no separators
        (raw_token("x:x7Kq:chat"), "bad offset"),
        (raw_token("-1:x7Kq:chat"), "bad offset"),
        (raw_token("1234567890123456789:x7Kq:chat"), "bad offset"),
        (raw_token("²:x7Kq:chat"), "bad offset"),  # a Unicode digit int() refuses
        (raw_token("١:x7Kq:chat"), "bad offset"),  # a Unicode digit int() would accept
        (raw_token("1::chat"), "bad epoch"),
        (raw_token("1:" + "e" * 65 + ":chat"), "bad epoch"),
        (raw_token("1:x7.q:chat"), "bad epoch"),
        (raw_token("1:x7Kq:"), "bad channel"),
        (raw_token("1:x7Kq:chat lobby"), "bad channel"),
        ("é", "not a tidings cursor"),  # not ASCII
        (f"{raw_token('1:e:c')}..{raw_token('2:e:c')}", "not a tidings cursor"),
    ],
)
def test_decode_cursor_refuses_malformed_cursors(cursor: str, reason: str):
    with pytest.raises(InvalidCursor, match=reason):
        decode_cursor(cursor)


def test_a_bad_cursor_among_good_ones_is_refused():
    with pytest.raises(InvalidCursor):
        decode_cursors([encode_token("a", Position("e", 1)), ""])


@given(st.dictionaries(channels, positions, min_size=1, max_size=5))
def test_encode_then_decode_round_trips_any_positions(positions_by_channel: dict[str, Position]):
    cursor = encode_cursor(positions_by_channel)
    assert decode_cursor(cursor) == positions_by_channel
    assert all(c.isalnum() or c in "-_." for c in cursor)


@given(channels, positions)
def test_a_token_round_trips_and_is_url_safe(channel: str, position: Position):
    token = encode_token(channel, position)
    assert decode_cursor(token) == {channel: position}
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@given(st.text(max_size=300) | st.text(alphabet="AZaz09-_.=+/:", max_size=300))
def test_decoding_arbitrary_text_raises_only_invalid_cursor(text: str):
    try:
        decoded = decode_cursor(text)
    except InvalidCursor:
        return
    assert decoded  # a cursor that decodes names at least one channel


@given(st.lists(st.binary(max_size=80), min_size=1, max_size=4))
def test_decoding_tokens_of_arbitrary_bytes_raises_only_invalid_cursor(raws: list[bytes]):
    cursor = ".".join(base64.urlsafe_b64encode(raw).decode().rstrip("=") for raw in raws)
    with contextlib.suppress(InvalidCursor):
        decode_cursor(cursor)


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["e", "f"]), st.integers(0, 20)),
        min_size=1,
        max_size=8,
    )
)
def test_decode_cursors_merge_follows_the_rule(items: list[tuple[str, str, int]]):
    expected: dict[str, Position] = {}
    for channel, epoch, offset in items:
        known = expected.get(channel)
        if known is None or known.epoch != epoch or offset > known.offset:
            expected[channel] = Position(epoch, offset)
    cursors = [encode_token(c, Position(e, o)) for c, e, o in items]
    assert decode_cursors(cursors) == expected
    assert decode_cursor(".".join(cursors)) == expected


def test_cursor_position_is_the_channels_position_and_ignores_the_others():
    cursor = encode_cursor({"a": Position("e", 4), "b": Position("e", 9)})
    assert cursor_position(cursor, "b") == Position("e", 9)


def test_cursor_position_refuses_a_cursor_without_the_channel():
    with pytest.raises(InvalidCursor, match="no position for c"):
        cursor_position(encode_token("a", Position("e", 4)), "c")


def test_positions_for_gives_the_positions_of_the_subscribed_channels():
    cursor = encode_cursor({"a": Position("AAAAAAAA", 3), "b": Position("AAAAAAAA", 5)})
    assert positions_for(cursor, ("a", "b", "c")) == {
        "a": Position("AAAAAAAA", 3),
        "b": Position("AAAAAAAA", 5),
    }
    assert positions_for([cursor, encode_token("a", Position("AAAAAAAA", 4))], {"a", "b"}) == {
        "a": Position("AAAAAAAA", 4),
        "b": Position("AAAAAAAA", 5),
    }


def test_positions_for_refuses_a_cursor_naming_a_channel_not_subscribed():
    cursor = encode_cursor({"a": Position("AAAAAAAA", 3), "b": Position("AAAAAAAA", 5)})
    with pytest.raises(InvalidCursor, match="'b'"):
        positions_for(cursor, ["a"])


def test_positions_for_refuses_a_cut_cursor_that_decodes_to_another_channel():
    token = encode_token("news:sports", Position("AAAAAAAA", 3))
    cut = token[: len(token) - len(token) % 4 - 4]
    assert decode_cursor(cut).keys() != {"news:sports"}  # it still decodes, elsewhere
    with pytest.raises(InvalidCursor, match="does not include"):
        positions_for(cut, ["news:sports"])
