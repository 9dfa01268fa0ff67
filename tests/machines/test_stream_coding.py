"""The HTTP stream machine with a compressed body (``sse.compression``): what it writes is the
plain stream's bytes, compressed, whatever happens; decoded here by the standard library (which
checks the trailer) and compared with an uncompressed machine driven alike."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.core.helpers import pub as publication
from tidings.core.disconnect import CloseCode, Disconnect, disconnect
from tidings.core.events import Gap
from tidings.core.position import Position
from tidings.core.wire.content_coding import StreamCoding
from tidings.core.wire.frames import EncodedPublication
from tidings.machines.stream import StreamConfig, StreamMachine

LIMIT = 400
GAP = Gap("c", "e", 5, 9, Position("e", 8))


class Lines:
    """A framing like NDJSON's: a single-channel stream sends the publication's shared line."""

    content_type = b"test/plain"
    heartbeat = b"<hb>\n"
    preamble = b"<pre>"

    def ready(self, positions: Mapping[str, Position], cursor: str) -> bytes:
        return b"<ready>\n"

    def gap(self, gap: Gap, cursor: str) -> bytes:
        return b"<gap>\n"

    def publication(self, encoded: EncodedPublication, cursor: str, single: bool) -> bytes:
        return encoded.ndjson if single else encoded.with_cursor(cursor) + b"\n"

    def farewell(self, reason: Disconnect) -> bytes:
        return b"<bye %d>\n" % reason.code


def machine(name: str | None, limit: int = LIMIT) -> StreamMachine:
    coding = None if name is None else StreamCoding(name, level=6)
    config = StreamConfig(heartbeat=1.0, outbox_bytes=limit, close_timeout=3.0)
    return StreamMachine(config, Lines(), coding)


def decode(name: str, wire: bytes) -> bytes:
    """What a client reads of ``wire``, without needing the trailer."""
    return zlib.decompressobj(31 if name == "gzip" else 15).decompress(wire)


def test_the_header_goes_out_with_the_first_bytes_and_every_event_decodes_at_once() -> None:
    m = machine("gzip")
    m.ready({}, "c")
    m.open(0.0)
    first = m.data_to_send()
    assert first.startswith(b"\x1f\x8b\x08")
    inflater = zlib.decompressobj(31)
    assert inflater.decompress(first) == b"<pre><ready>\n"
    m.written(0)
    m.tick(0.5)
    m.tick(1.0)  # idle: a heartbeat, compressed too
    assert inflater.decompress(m.data_to_send()) == b"<hb>\n"
    encoded = EncodedPublication(publication(1))
    m.publication(encoded, "x", True)
    assert inflater.decompress(m.data_to_send()) == encoded.ndjson
    m.gap(GAP, "c")
    assert inflater.decompress(m.data_to_send()) == b"<gap>\n"


def test_a_publication_s_segment_is_shared_by_every_single_channel_stream() -> None:
    encoded = EncodedPublication(publication(1))
    streams = [machine("gzip"), machine("deflate")]
    sent = []
    for m in streams:
        m.ready({}, "c")
        m.open(0.0)
        m.data_to_send()
        m.publication(encoded, "x", True)
        sent.append(m.data_to_send())
    assert sent[0] == sent[1] == encoded.deflated(encoded.ndjson, 6)
    own = machine("gzip")  # a stream of several channels: its own cursor, its own segment
    own.ready({}, "c")
    own.open(0.0)
    head = own.data_to_send()
    own.publication(encoded, "several", False)
    assert (
        decode("gzip", head + own.data_to_send())
        == b"<pre><ready>\n" + encoded.with_cursor("several") + b"\n"
    )


@pytest.mark.parametrize("name", ["gzip", "deflate"])
def test_a_stream_ended_while_subscribing_is_one_whole_compressed_body(name: str) -> None:
    m = machine(name)
    m.ready({}, "c")
    m.drain()
    m.open(0.0)
    body = m.farewell(0.0)
    plain = b"<pre><ready>\n<bye 1012>\n"
    assert (gzip.decompress(body) if name == "gzip" else zlib.decompress(body)) == plain


@pytest.mark.parametrize("name", ["gzip", "deflate"])
def test_a_slow_consumer_s_dropped_data_is_not_in_the_trailer(name: str) -> None:
    """The 4008 end drops what the client could not take: the trailer's check covers what was
    sent, so the body still decodes and checks."""
    m = machine(name)
    m.ready({}, "c")
    m.open(0.0)
    head = m.data_to_send()
    m.written(0)
    for offset in range(1, 40):  # far more than the limit, never flushed
        m.publication(EncodedPublication(publication(offset)), "x", True)
    assert m.ending and m.overflowed
    body = head + m.farewell(1.0)
    plain = b"<pre><ready>\n<bye 4008>\n"
    assert (gzip.decompress(body) if name == "gzip" else zlib.decompress(body)) == plain


def test_a_slow_consumer_cut_before_the_first_write_still_gets_the_header() -> None:
    m = machine("gzip")
    m.ready({}, "c")
    m.open(0.0)
    for offset in range(1, 40):
        m.publication(EncodedPublication(publication(offset)), "x", True)
    assert m.ending
    assert gzip.decompress(m.farewell(1.0)) == b"<bye 4008>\n"


events = st.lists(
    st.one_of(
        st.tuples(st.just("pub"), st.integers(1, 6)),
        st.tuples(st.just("own"), st.integers(1, 6)),
        st.tuples(st.just("gap"), st.just(0)),
        st.tuples(st.just("flush"), st.integers(0, 500)),
        st.tuples(st.just("tick"), st.integers(0, 4)),
        st.tuples(st.just("disconnect"), st.sampled_from([1001, 1012, 4008])),
        st.tuples(st.just("gone"), st.just(0)),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(["gzip", "deflate"]), steps=events)
def test_any_sequence_of_events_writes_the_plain_stream_compressed(
    name: str, steps: list[tuple[str, int]]
) -> None:
    """A compressed and a plain machine driven alike write the same stream, byte for byte once
    decoded; a stream the server ended has a trailer that checks. (No backlog limit: the
    compressed stream's backlog is smaller, the two would end apart.)"""
    plain, coded = machine(None, 1 << 30), machine(name, 1 << 30)
    out: dict[StreamMachine, list[bytes]] = {plain: [], coded: []}
    farewell = False
    pubs = [EncodedPublication(publication(offset)) for offset in range(1, 7)]
    now = 0.0
    for m in (plain, coded):
        m.ready({}, "c")
        m.open(now)
    for kind, value in steps:
        for m in (plain, coded):
            if kind in ("pub", "own"):
                m.publication(pubs[value - 1], "c,d", kind == "pub")
            elif kind == "gap":
                m.gap(GAP, "c")
            elif kind == "flush":
                if data := m.data_to_send():
                    out[m].append(data)
                    m.written(value)
            elif kind == "tick":
                m.tick(now + value / 2)
            elif kind == "disconnect":
                m.disconnect(disconnect(CloseCode(value)))
            else:
                m.peer_gone()
            if m.ending:
                out[m].append(m.farewell(now))
                farewell = True
        if kind == "tick":
            now += value / 2
    wire = b"".join(out[coded])
    if farewell:
        whole = gzip.decompress(wire) if name == "gzip" else zlib.decompress(wire)
        assert whole == b"".join(out[plain])
    elif wire:
        assert decode(name, wire) == b"".join(out[plain])


def test_a_stream_that_sent_the_previous_publication_gets_the_shared_chained_segment() -> None:
    """Consecutive publications: the second one's segment is chained to the first (smaller),
    shared by the streams that sent the first; a stream with an event between them (a gap
    notice) gets the independent one. Each stream decodes what it was sent."""
    first, second = (EncodedPublication(publication(offset)) for offset in (1, 2))
    streams = [machine("gzip") for _ in range(3)]
    inflaters = [zlib.decompressobj(31) for _ in streams]
    for m, inflater in zip(streams, inflaters, strict=True):
        m.ready({}, "c")
        m.open(0.0)
        inflater.decompress(m.data_to_send())
        m.publication(first, "x", True)
        assert inflater.decompress(m.data_to_send()) == first.ndjson
    streams[2].gap(GAP, "c")
    assert inflaters[2].decompress(streams[2].data_to_send()) == b"<gap>\n"
    sent = []
    for m, inflater in zip(streams, inflaters, strict=True):
        m.publication(second, "x", True)
        sent.append(m.data_to_send())
        assert inflater.decompress(sent[-1]) == second.ndjson
    assert sent[0] is sent[1] == second.deflated(second.ndjson, 6, first.ndjson)
    assert sent[2] == second.deflated(second.ndjson, 6) and len(sent[0]) < len(sent[2])


@pytest.mark.parametrize("name", ["gzip", "deflate"])
def test_a_write_interrupted_by_the_end_is_not_in_the_trailer(name: str) -> None:
    """ASGI: the end cancels a ``send`` that waits for the socket, before it writes; the driver
    reports no write, and the trailer counts only what was written."""
    m = machine(name)
    m.ready({}, "c")
    m.open(0.0)
    head = m.data_to_send()
    m.written(0)
    m.publication(EncodedPublication(publication(1)), "x", True)
    assert m.data_to_send()  # handed to a send that is then interrupted: never written
    m.disconnect(disconnect(CloseCode.GOING_AWAY, "bye"))
    body = head + m.farewell(1.0)
    plain = b"<pre><ready>\n<bye 1001>\n"
    assert (gzip.decompress(body) if name == "gzip" else zlib.decompress(body)) == plain


def test_an_interrupted_first_write_leaves_the_header_to_the_farewell() -> None:
    m = machine("gzip")
    m.ready({}, "c")
    m.open(0.0)
    assert m.data_to_send().startswith(b"\x1f\x8b")  # never written
    m.drain()
    assert gzip.decompress(m.farewell(1.0)) == b"<bye 1012>\n"


def test_a_stream_of_several_channels_chains_its_own_publications() -> None:
    first, second = (EncodedPublication(publication(offset)) for offset in (1, 2))
    m = machine("deflate")
    m.ready({}, "c")
    m.open(0.0)
    inflater = zlib.decompressobj(15)
    inflater.decompress(m.data_to_send())
    sizes = []
    for encoded in (first, second):
        m.publication(encoded, "c,d", False)
        wire = m.data_to_send()
        assert inflater.decompress(wire) == encoded.with_cursor("c,d") + b"\n"
        sizes.append(len(wire))
    assert sizes[1] < sizes[0] / 2  # the second refers to the first


def test_a_compressed_stream_without_count_pending_counts_only_what_is_reported() -> None:
    """``count_pending=False`` (the sockets engine): a compressed publication is not counted as
    it waits either; the backlog reported after its write is."""
    config = StreamConfig(heartbeat=1.0, outbox_bytes=LIMIT, close_timeout=3.0, count_pending=False)
    m = StreamMachine(config, Lines(), StreamCoding("gzip", level=6))
    m.open(0.0)
    for seq in range(1, 40):
        m.publication(EncodedPublication(publication(seq)), "x", True)
    assert not m.ending
    data = m.data_to_send()
    assert len(data) > LIMIT  # held past the limit, not counted
    assert zlib.decompressobj(31).decompress(data).count(b"\n") == 39
    assert m.written(LIMIT + 1) is True
    assert m.ending and m.overflowed
