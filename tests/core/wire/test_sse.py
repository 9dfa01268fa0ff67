from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidings.core.wire.sse import SSEMessage, SSEParser, sse_comment, sse_event, sse_retry


def parse_all(*chunks: bytes) -> tuple[list[SSEMessage], SSEParser]:
    parser = SSEParser()
    out: list[SSEMessage] = []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
    return out, parser


def test_sse_event_writes_id_event_and_data_lines_then_a_blank_line():
    assert sse_event("message", b'{"a":1}', "c1") == b'id: c1\nevent: message\ndata: {"a":1}\n\n'


def test_sse_event_without_id_or_event_writes_data_alone():
    assert sse_event(None, b"x") == b"data: x\n\n"


def test_sse_event_splits_data_at_every_kind_of_line_end():
    assert sse_event(None, b"a\nb\r\nc\rd") == b"data: a\ndata: b\ndata: c\ndata: d\n\n"


def test_sse_event_with_empty_data_writes_one_empty_data_line():
    assert sse_event(None, b"") == b"data: \n\n"


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\0b"])
def test_sse_event_refuses_ids_and_events_that_could_inject_fields(bad: str):
    with pytest.raises(ValueError, match="id must not"):
        sse_event(None, b"x", bad)
    with pytest.raises(ValueError, match="event must not"):
        sse_event(bad, b"x")


def test_sse_comment_and_retry():
    assert sse_comment() == b": \n\n"
    assert sse_comment("ping") == b": ping\n\n"
    assert sse_retry(3000) == b"retry: 3000\n"  # a field of the block it opens
    assert sse_retry(-5) == b"retry: 0\n"
    with pytest.raises(ValueError, match="comment"):
        sse_comment("a\nb")


def test_parser_reads_an_event_with_id():
    messages, parser = parse_all(b"id: c1\nevent: typing\ndata: hi\n\n")
    assert messages == [SSEMessage("typing", "hi", "c1")]
    assert parser.last_event_id == "c1"


def test_parser_defaults_the_event_type_to_message_and_joins_data_lines():
    messages, _ = parse_all(b"data: a\ndata:b\ndata\n\n")
    assert messages == [SSEMessage("message", "a\nb\n", "")]


def test_parser_accepts_crlf_cr_and_lf_line_ends():
    messages, _ = parse_all(b"data: a\r\n\r\ndata: b\r\rdata: c\n\n")
    assert [m.data for m in messages] == ["a", "b", "c"]


def test_parser_treats_an_lf_after_a_cr_at_a_chunk_end_as_one_line_end():
    messages, _ = parse_all(b"data: a\r", b"\n", b"\r", b"", b"\n")
    assert [m.data for m in messages] == ["a"]


def test_parser_dispatches_an_event_ended_by_a_cr_at_the_end_of_a_chunk():
    parser = SSEParser()
    assert parser.feed(b"data: a\r\r") == [SSEMessage("message", "a", "")]
    assert parser.feed(b"\ndata: b\r\n\r\n") == [SSEMessage("message", "b", "")]


def test_parser_ignores_comments_unknown_fields_and_events_without_data():
    messages, _ = parse_all(b": heartbeat\n\nfoo: bar\nevent: x\n\ndata: y\n\n")
    assert messages == [SSEMessage("message", "y", "")]


def test_parser_keeps_the_last_event_id_across_events_and_ignores_ids_with_nul():
    messages, parser = parse_all(b"id: 1\ndata: a\n\ndata: b\n\nid: 2\0x\ndata: c\n\n")
    assert [m.last_event_id for m in messages] == ["1", "1", "1"]
    assert parser.last_event_id == "1"


def test_parser_keeps_retry_only_when_it_is_ascii_digits():
    _, parser = parse_all(b"retry: 1500\n\nretry: soon\n\nretry: \xd9\xa1\n\n")
    assert parser.retry == 1500


def test_parser_strips_a_leading_bom_even_when_split():
    messages, _ = parse_all(b"\xef", b"\xbb", b"\xbfdata: a\n\n")
    assert [m.data for m in messages] == ["a"]
    messages, _ = parse_all(b"\xef\xbb\xbfdata: b\n\n")
    assert [m.data for m in messages] == ["b"]


def test_parser_does_not_strip_a_bom_after_the_first_bytes():
    # The BOM is only skipped at the very start of the stream; later it is part of a field name.
    messages, _ = parse_all(b"\n", b"\xef\xbb\xbfdata: a\n\n")
    assert messages == []
    messages, _ = parse_all(b":\n\xef\xbb\xbfdata: a\n\n")
    assert messages == []


def test_parser_reads_a_short_stream_that_is_not_a_bom():
    messages, _ = parse_all(b"d", b"ata: x\n", b"\n")
    assert [m.data for m in messages] == ["x"]


def test_parser_replaces_invalid_utf8():
    messages, _ = parse_all(b"data: \xff\n\n")
    assert messages[0].data == "\ufffd"


def test_parser_discards_an_unfinished_event():
    messages, _ = parse_all(b"data: a\n")
    assert messages == []


# properties ------------------------------------------------------------------------------------


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, start = [], 0
    for point in [*points, len(data)]:
        out.append(data[start:point])
        start = point
    return out


field_text = st.text(st.characters(blacklist_characters="\r\n\0", codec="utf-8"), max_size=30)
data_text = st.lists(
    st.text(st.characters(codec="utf-8"), max_size=8)
    | st.sampled_from(["\n", "\r", "\r\n", "😀", "é", "", "\ufeff", ":", " "]),
    max_size=10,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(
    events=st.lists(st.tuples(st.none() | field_text, data_text, st.none() | field_text), max_size=5),
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
    retry=st.integers(0, 100_000),
)
def test_sse_framing_round_trips_through_the_parser_at_any_chunk_boundaries(
    events: list[tuple[str | None, str, str | None]], cuts: list[int], retry: int
):
    stream = (
        sse_retry(retry)
        + sse_comment("hello")
        + b"".join(sse_event(event, data.encode(), event_id) for event, data, event_id in events)
    )
    messages, parser = parse_all(*chunked(stream, cuts))
    expected, last_id = [], ""
    for event, data, event_id in events:
        if event_id is not None:
            last_id = event_id
        normalised = data.replace("\r\n", "\n").replace("\r", "\n")
        expected.append(SSEMessage(event or "message", normalised, last_id))
    assert messages == expected
    assert parser.retry == retry


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(st.lists(field_text, min_size=1, max_size=3), max_size=4),
    ends=st.lists(st.sampled_from([b"\n", b"\r", b"\r\n"]), min_size=1, max_size=8),
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
)
def test_parser_reads_any_mix_of_line_ends_at_any_chunk_boundaries(
    events: list[list[str]], ends: list[bytes], cuts: list[int]
):
    lines: list[bytes] = []
    for data_lines in events:
        lines.extend(b"data: " + line.encode() for line in data_lines)  # one space is stripped
        lines.append(b"")
    stream, previous = b"", b""
    for i, line in enumerate(lines):
        end = ends[i % len(ends)]
        if previous == b"\r" and line == b"" and end == b"\n":
            end = b"\r"  # CR, then LF alone, would be one CRLF line end: not what we mean
        stream += line + end
        previous = end
    messages, _ = parse_all(*chunked(stream, cuts))
    assert messages == [SSEMessage("message", "\n".join(d), "") for d in events]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=8))
def test_parser_accepts_arbitrary_bytes(chunks: list[bytes]):
    parse_all(*chunks)
