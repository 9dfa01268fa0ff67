"""Fossil deltas: apply(source, create(source, target)) == target, and malformed deltas refused.

The cross-check with the npm ``fossil-delta`` package (deltas made here applied there, and theirs
applied here) is tests/engines/test_delta_node.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.core.fossil import DeltaError, _put_int, apply, checksum, create

# Bytes that edits of one another: the interesting case (mostly copies, some literals).
_edits = st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 40), st.binary(max_size=40)), max_size=8)


def _edited(source: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    out = bytearray(source)
    for at, cut, insert in edits:
        at = at % (len(out) + 1)
        out[at : at + cut] = insert
    return bytes(out)


@given(st.binary(max_size=3000), _edits)
@settings(max_examples=300, deadline=None)
def test_round_trip_of_edits(source: bytes, edits: list[tuple[int, int, bytes]]) -> None:
    target = _edited(source, edits)
    assert apply(source, create(source, target)) == target


@given(st.binary(max_size=600), st.binary(max_size=600))
@settings(max_examples=200, deadline=None)
def test_round_trip_of_unrelated_bytes(source: bytes, target: bytes) -> None:
    assert apply(source, create(source, target)) == target


@given(st.text(alphabet='ab{}:,"0', max_size=400).map(str.encode), st.integers(1, 30))
@settings(max_examples=200, deadline=None)
def test_round_trip_of_repetitive_text(source: bytes, times: int) -> None:
    # long hash chains: many blocks share a hash, the search limit is reached
    target = source * times + b"tail"
    assert apply(source * 2, create(source * 2, target)) == target


def test_a_small_edit_of_a_long_text_is_a_small_delta() -> None:
    source = b'{"symbol":"ACME","bid":101.25,"ask":101.5,"book":[' + b"[1,2,3]," * 100 + b"[4]]}"
    target = source.replace(b"101.25", b"101.30")
    delta = create(source, target)
    assert len(delta) < 40
    assert apply(source, delta) == target


def test_empty_source_and_target() -> None:
    assert create(b"", b"") == b"0\n0:0;"
    assert apply(b"", b"0\n0:0;") == b""
    assert apply(b"x" * 40, create(b"x" * 40, b"")) == b""


def test_known_vector() -> None:
    # a copy, a literal, a copy: the format as written by hand
    source = b"0123456789abcdefghijklmnopqrstuvwxyz"
    target = b"0123456789ABCDklmnopqrstuvwxyz"
    delta = b"U\nA@0,4:ABCDG@K," + _put_int(checksum(target)) + b";"
    assert apply(source, delta) == target


def test_integers_round_trip_through_the_base64_digits() -> None:
    for value in (0, 1, 63, 64, 4095, 4096, 2**32 - 1):
        delta = _put_int(0) + b"\n" + _put_int(0) + b":" + _put_int(checksum(b"")) + b";"
        assert apply(b"", delta) == b""
        assert len(_put_int(value)) == max(1, (value.bit_length() + 5) // 6)


def test_checksum_pads_the_last_word() -> None:
    assert checksum(b"\x01") == 0x01000000
    assert checksum(b"\x00\x00\x00\x01\x00\x02") == 1 + 0x00020000
    assert checksum(b"\xff\xff\xff\xff\x00\x00\x00\x01") == 0  # 32-bit wraparound


@pytest.mark.parametrize(
    ("delta", "message"),
    [
        (b"", "expected a number"),
        (b"3", "unterminated"),
        (b"3!", "newline"),
        (b"3\n", "expected a number"),
        (b"3\n3@0;", "comma"),
        (b"3\n9@0,", "output size"),
        (b"3\n3@9,", "past the end of the source"),
        (b"3\n9:abc", "output size"),
        (b"3\n3:ab", "past the end of the delta"),
        (b"3\n3:abc0;", "checksum"),
        (b"3\n3?", "unknown delta operator"),
        (b"3\n2:ab", "expected a number"),
    ],
)
def test_malformed_deltas_are_refused(delta: bytes, message: str) -> None:
    with pytest.raises(DeltaError, match=message):
        apply(b"abcdef", delta)


def test_a_short_output_is_refused() -> None:
    target = b"ab"
    delta = b"3\n2:ab" + _put_int(checksum(target)) + b";"
    with pytest.raises(DeltaError, match="output size does not match"):
        apply(b"", delta)


def test_a_target_with_nothing_in_common_is_one_literal() -> None:
    source, target = b"a" * 32, b"b" * 40
    assert create(source, target) == b"d\nd:" + target + _put_int(checksum(target)) + b";"
