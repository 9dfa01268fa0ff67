"""Content-Encoding of the HTTP streams (tidings.core.wire.content_coding): the negotiation, the
independent segments and the per-response wrapper, decoded by the standard library's zlib and
gzip (which check the trailer's CRC-32, Adler-32 and length)."""

from __future__ import annotations

import gzip
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.core.wire.content_coding import StreamCoding, accepted_coding, deflate_segment
from tidings.core.wire.frames import EncodedPublication

from ..helpers import pub

EVENTS = [b"retry: 2000\nevent: ready\ndata: {}\n\n", b": heartbeat\n\n", b"x" * 5000, b"", b"data: 1\n\n"]


@pytest.mark.parametrize(
    ("header", "coding"),
    [
        (None, None),
        ("", None),
        ("identity", None),
        ("gzip", "gzip"),
        ("GZip", "gzip"),
        ("x-gzip", "gzip"),
        ("deflate", "deflate"),
        ("gzip, deflate, br, zstd", "gzip"),  # what browsers send: gzip wins a tie
        ("deflate, gzip", "gzip"),
        ("gzip;q=0.5, deflate", "deflate"),
        ("gzip; q=0.5, deflate;q=0.8", "deflate"),
        ("gzip;q=0", None),
        ("gzip;q=0, deflate;q=0", None),
        ("gzip;q=0, *", "deflate"),  # * covers the codings not named
        ("*", "gzip"),
        ("*;q=0", None),
        ("*;q=0, deflate", "deflate"),
        ("gzip;q=nonsense", None),  # a malformed q is q=0: not an offer
        ("gzip;q=2", None),
        ("gzip;level=1", "gzip"),  # a parameter other than q changes nothing
        ("br, zstd", None),
        ("gzip;q=0.1, x-gzip;q=0.9, deflate;q=0.5", "gzip"),  # the best of its spellings
    ],
)
def test_the_coding_is_the_allowed_one_with_the_highest_q(header: str | None, coding: str | None) -> None:
    assert accepted_coding(header) == coding


@given(st.lists(st.binary(max_size=3000), max_size=6), st.integers(1, 9))
def test_segments_joined_in_any_order_are_one_raw_deflate_stream(pieces: list[bytes], level: int) -> None:
    segments = [deflate_segment(piece, level) for piece in pieces]
    for order in (segments, segments[::-1]):
        inflater = zlib.decompressobj(-15)
        expected = pieces if order is segments else pieces[::-1]
        assert inflater.decompress(b"".join(order)) == b"".join(expected)
        assert not inflater.eof  # no final block: the stream goes on


def test_a_segment_is_whole_on_its_own_so_a_decoder_hands_it_out_at_once() -> None:
    """Fed one segment at a time, a decoder gives each event back before the next arrives."""
    inflater = zlib.decompressobj(-15)
    for event in EVENTS:
        assert inflater.decompress(deflate_segment(event, 6)) == event


@pytest.mark.parametrize("name", ["gzip", "deflate"])
def test_a_response_is_the_header_its_segments_and_the_trailer_of_what_was_sent(name: str) -> None:
    coding = StreamCoding(name, level=1)
    body = [coding.header()]
    for event in EVENTS[:3]:
        body.append(coding.segment(event))
    coding.handed()
    coding.sent()
    shared = deflate_segment(EVENTS[4], 1)  # made once for many responses, counted here
    coding.taken(EVENTS[4])
    body.append(shared)
    coding.handed()
    coding.sent()
    coding.segment(b"never sent: a slow consumer's pending data")
    coding.taken(b"never sent either")
    coding.dropped()
    coding.segment(b"handed, but the write was interrupted before it wrote")
    coding.handed()
    coding.lost()
    body.append(coding.segment(EVENTS[3]))
    coding.handed()
    coding.sent()
    body.append(coding.trailer())
    plain = b"".join((*EVENTS[:3], EVENTS[4], EVENTS[3]))
    wire = b"".join(body)
    if name == "gzip":
        assert gzip.decompress(wire) == plain  # checks the CRC-32 and the length
    else:
        assert zlib.decompress(wire) == plain  # checks the Adler-32


@pytest.mark.parametrize("name", ["gzip", "deflate"])
def test_a_stream_without_a_trailer_still_decodes_as_far_as_it_went(name: str) -> None:
    coding = StreamCoding(name)
    wire = coding.header() + coding.segment(b"data: 1\n\n")
    inflater = zlib.decompressobj(31 if name == "gzip" else 15)
    assert inflater.decompress(wire) == b"data: 1\n\n"
    assert not inflater.eof


def test_a_gzip_trailer_gives_the_length_modulo_2_to_the_32() -> None:
    coding = StreamCoding("gzip")
    coding._size = (1 << 32) + 5  # what 4 GiB and 5 bytes would have left
    assert coding.trailer()[-4:] == (5).to_bytes(4, "little")


def test_an_unknown_coding_is_refused() -> None:
    with pytest.raises(ValueError, match="br"):
        StreamCoding("br")


def test_a_publication_s_shared_bytes_are_compressed_once_and_others_not_at_all() -> None:
    encoded = EncodedPublication(pub(3))
    sse, ndjson = encoded.sse, encoded.ndjson
    first = encoded.deflated(sse, 6)
    assert first is not None and zlib.decompressobj(-15).decompress(first) == sse
    assert encoded.deflated(sse, 6) is first  # shared, not made again
    line = encoded.deflated(ndjson, 6)
    assert line is not None and zlib.decompressobj(-15).decompress(line) == ndjson
    assert encoded.deflated(ndjson, 6) is line
    assert encoded.deflated(bytes(bytearray(sse)), 6) is None  # equal bytes, a stream's own copy


def test_a_chained_segment_decodes_right_behind_the_bytes_it_follows_and_is_smaller() -> None:
    before = b'data: {"symbol":"ACME","bid":41.5,"ask":41.7,"volume":18234,"book":[1,2,3,4,5]}\n\n'
    event = b'data: {"symbol":"ACME","bid":41.6,"ask":41.7,"volume":18240,"book":[1,2,3,4,6]}\n\n'
    chained = deflate_segment(event, 6, after=before)
    assert len(chained) < len(deflate_segment(event, 6)) / 2
    inflater = zlib.decompressobj(-15)
    assert inflater.decompress(deflate_segment(before, 6)) == before
    assert inflater.decompress(chained) == event
    long_history = b"y" * 40_000 + before  # longer than any decoder's window: only its end is used
    inflater = zlib.decompressobj(-15)
    assert inflater.decompress(deflate_segment(long_history, 6)) == long_history
    assert inflater.decompress(deflate_segment(event, 6, after=long_history)) == event


@pytest.mark.parametrize("kind", ["sse", "ndjson"])
def test_a_publication_chains_to_the_first_bytes_asked_for_and_to_no_others(kind: str) -> None:
    previous, encoded = EncodedPublication(pub(3)), EncodedPublication(pub(4))
    after, data = getattr(previous, kind), getattr(encoded, kind)
    chained = encoded.deflated(data, 6, after)
    assert chained is not None and encoded.deflated(data, 6, after) is chained  # made once
    inflater = zlib.decompressobj(-15)
    inflater.decompress(deflate_segment(after, 6))
    assert inflater.decompress(chained) == data
    other = bytes(bytearray(after))  # a stream whose last event was something else
    assert encoded.deflated(data, 6, other) is encoded.deflated(data, 6)  # the independent one
    assert chained != encoded.deflated(data, 6)
