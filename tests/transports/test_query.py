"""The query parser's shortcut for strings with nothing to decode reads them as parse_qsl does."""

from __future__ import annotations

from urllib.parse import parse_qsl

from hypothesis import given
from hypothesis import strategies as st

from tidings.transports.http_common import _query

NAMES = frozenset(["a", "b", "channel", ""])


def expected(raw: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in parse_qsl(raw, keep_blank_values=True, errors="strict"):
        out.setdefault(name, []).append(value)
    return out


@given(st.lists(st.sampled_from(["a", "b", "channel", "=", "&", ";", "x", "é", "=="]), max_size=12))
def test_a_query_without_escapes_reads_as_parse_qsl_reads_it(parts: list[str]):
    raw = "".join(parts)
    want = expected(raw)
    if set(want) <= NAMES:
        assert _query({"query_string": raw.encode("latin-1", "replace")}, NAMES) == expected(
            raw.encode("latin-1", "replace").decode("latin-1")
        )


def test_a_query_with_escapes_is_decoded():
    assert _query({"query_string": b"channel=a%3Ab&b=x+y"}, NAMES) == {"channel": ["a:b"], "b": ["x y"]}
