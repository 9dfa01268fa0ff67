"""permessage-deflate (tidings.core.wire.deflate and the frame parser's inflating), checked against
a reference.

The reference is ``websockets``' own permessage-deflate (``websockets.extensions.
permessage_deflate.PerMessageDeflate``), an implementation written apart from tidings': it
compresses the client messages the parser must read and decodes the frames the server sends.
Hypothesis draws the messages (text and binary, compressible or not, either side of the
threshold), how a client cuts them into frames, the window it compresses with, and how the
bytes arrive; negotiation is checked on a table of offers (RFC 7692 5 and 7.1) and fuzzed
headers.
"""

from __future__ import annotations

import gc
import os
import weakref
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode

from tests.core.wire.test_websocket import chunkings, feed, split
from tests.rfc6455 import client_frame, server_frames
from tidings.core.events import Publication
from tidings.core.wire.deflate import (
    Deflate,
    DeflateSender,
    InflateError,
    Inflater,
    deflate_frame_header,
    extension_headers,
    negotiate,
    parse_offers,
)
from tidings.core.wire.frames import EncodedPublication
from tidings.core.wire.websocket import (
    OP_BINARY,
    OP_CONT,
    OP_PING,
    OP_TEXT,
    BinaryMessage,
    FrameParser,
    Ping,
    ProtocolError,
    TextMessage,
)

FUZZ = settings(max_examples=100, deadline=None)
CHAINED = "permessage-deflate; client_no_context_takeover"
BOTH = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


# Negotiation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offer", "answer", "bits"),
    [
        # the matrix: none, default, no context takeover, window bits either way
        (None, None, None),
        ("", None, None),
        ("permessage-deflate", CHAINED, 15),
        ("permessage-deflate; client_max_window_bits", CHAINED, 15),  # browsers, ws, websockets
        ("permessage-deflate; client_no_context_takeover", CHAINED, 15),
        ("permessage-deflate; server_no_context_takeover", BOTH, 15),  # then every message alone
        ("permessage-deflate; client_max_window_bits=10", CHAINED, 15),
        ("permessage-deflate; server_max_window_bits=10", f"{CHAINED}; server_max_window_bits=10", 10),
        ('permessage-deflate; server_max_window_bits="12"', f"{CHAINED}; server_max_window_bits=12", 12),
        ("permessage-deflate; server_max_window_bits=8", f"{CHAINED}; server_max_window_bits=8", 8),
        ("PerMessage-Deflate; Client_Max_Window_Bits", CHAINED, 15),
        # the first acceptable offer wins; other extensions are skipped
        ("x-webkit-deflate-frame, permessage-deflate", CHAINED, 15),
        (
            "permessage-deflate; server_max_window_bits=9, permessage-deflate",
            f"{CHAINED}; server_max_window_bits=9",
            9,
        ),
        (
            "permessage-deflate; foo, permessage-deflate; server_max_window_bits=11",
            f"{CHAINED}; server_max_window_bits=11",
            11,
        ),
        # declined: unknown, repeated, or badly valued parameters
        ("permessage-deflate; foo", None, None),
        ("permessage-deflate; client_no_context_takeover; client_no_context_takeover", None, None),
        ("permessage-deflate; server_no_context_takeover=1", None, None),
        ("permessage-deflate; server_max_window_bits", None, None),
        ("permessage-deflate; server_max_window_bits=7", None, None),
        ("permessage-deflate; server_max_window_bits=16", None, None),
        ("permessage-deflate; server_max_window_bits=09", None, None),
        ("permessage-deflate; client_max_window_bits=x", None, None),
        ("x-webkit-deflate-frame", None, None),
    ],
)
def test_negotiation(offer: str | None, answer: str | None, bits: int | None) -> None:
    deflate = negotiate(offer, 256)
    if answer is None:
        assert deflate is None
        assert extension_headers(deflate) == []
        return
    assert deflate is not None
    assert deflate.response == answer
    assert deflate.bits == bits
    assert extension_headers(deflate) == [("Sec-WebSocket-Extensions", answer)]
    assert repr(deflate) == f"Deflate(bits={bits}, threshold=256)"
    assert deflate.chained == ("server_no_context_takeover" not in answer)


def test_outcomes_are_shared() -> None:
    """One object per outcome: a connection holds a reference, publications key on it."""
    a = negotiate("permessage-deflate", 256)
    assert a is negotiate("permessage-deflate; client_max_window_bits", 256)
    assert a is not negotiate("permessage-deflate", 100)
    assert a is not negotiate("permessage-deflate; server_max_window_bits=15", 256)


@given(st.text(alphabet=st.sampled_from(list('permssage-dflt_ovrcniwbx=;, "0123456789'))))
@FUZZ
def test_any_header_is_answered_or_declined(header: str) -> None:
    """Whatever the header, negotiation answers with an acceptable outcome or declines."""
    deflate = negotiate(header, 256)
    offers = parse_offers(header)
    if deflate is None:
        assert all(offer is None for offer in offers)
    else:
        assert 8 <= deflate.bits <= 15
        assert deflate.response.startswith(BOTH)


# Compression (the server's frames) ----------------------------------------------------------


def reference_decode(frame: bytes, bits: int) -> tuple[int, bytes]:
    """Decode one server frame as a client would (``websockets``' permessage-deflate)."""
    [(fin, rsv, opcode, payload)] = server_frames(frame)
    assert fin and rsv in (0, 4)
    client = PerMessageDeflate(True, True, bits, 15)  # remote = the server
    decoded = client.decode(Frame(Opcode(opcode), payload, True, rsv == 4), max_size=None)
    return opcode, bytes(decoded.data)


json_like = st.lists(
    st.fixed_dictionaries(
        {"id": st.integers(0, 99), "price": st.floats(0, 1e3), "sym": st.sampled_from(["AB", "CD"])}
    ),
    max_size=60,
).map(lambda items: repr(items).encode())
payloads = json_like | st.binary(max_size=600) | st.sampled_from([b"", b"x" * 255, b"x" * 256, b"a" * 70000])


@given(
    payloads,
    st.sampled_from([8, 9, 12, 15]),
    st.sampled_from([0, 64, 256]),
    st.sampled_from([OP_TEXT, OP_BINARY]),
)
@FUZZ
def test_server_frames_read_by_the_reference(payload: bytes, bits: int, threshold: int, opcode: int) -> None:
    """Every frame decodes to its message; compressed (RSV1) exactly when at least the
    threshold, smaller for it, and the window is one zlib can write (9 or more bits)."""
    deflate = Deflate(bits, threshold, ())
    frame = deflate.frame(payload, opcode)
    assert reference_decode(frame, bits) == (opcode, payload)
    compressed = frame[0] & 0x40
    expected = len(payload) >= threshold and bits >= 9
    if not expected:
        assert not compressed
    if compressed:
        assert len(frame) < len(deflate_frame_header(opcode, len(payload), False)) + len(payload)
        assert deflate.compress(payload) is not None


def test_compressible_messages_are_compressed_and_incompressible_ones_are_not() -> None:
    deflate = negotiate("permessage-deflate", 256)
    assert deflate is not None
    assert deflate.compress(b'{"price": 1}' * 100) is not None
    assert deflate.compress(os.urandom(1000)) is None
    assert deflate.compress(b"x" * 255) is None


def test_frame_headers_use_the_shortest_length() -> None:
    assert deflate_frame_header(OP_TEXT, 125, True) == b"\xc1\x7d"
    assert deflate_frame_header(OP_TEXT, 126, False) == b"\x81\x7e\x00\x7e"
    assert deflate_frame_header(OP_BINARY, 65536, True) == b"\xc2\x7f" + (65536).to_bytes(8, "big")


def test_a_publication_is_compressed_once_per_outcome() -> None:
    small = EncodedPublication(Publication("c", 1, "e", "id", 0, "message", "x"))
    big = EncodedPublication(Publication("c", 2, "e", "id", 0, "message", {"k": "v" * 2000}))
    default = negotiate("permessage-deflate", 256)
    narrow = negotiate("permessage-deflate; server_max_window_bits=9", 256)
    assert default is not None and narrow is not None
    assert small.ws_deflated(default) is small.ws_frame  # too short: the plain frame itself
    frame = big.ws_deflated(default)
    assert frame is big.ws_deflated(default)  # cached
    assert frame[0] == 0xC1 and len(frame) < len(big.ws_frame)
    assert reference_decode(frame, 15) == (OP_TEXT, big.ws_text.encode())
    assert reference_decode(big.ws_deflated(narrow), 9) == (OP_TEXT, big.ws_text.encode())


# Inflating (the client's frames) -------------------------------------------------------------


def client_compressed(payload: bytes, bits: int) -> bytes:
    """``payload`` compressed by a client (``websockets``, no context takeover, ``bits``
    window): the payload of a compressed message's frame."""
    client = PerMessageDeflate(True, True, 15, bits)  # local = the client
    return bytes(client.encode(Frame(Opcode.TEXT, payload)).data)


@st.composite
def compressed_messages(draw: st.DrawFn) -> tuple[int, bytes, bytes]:
    """(opcode, message, the client's frames): compressed with some window, cut anywhere."""
    opcode = draw(st.sampled_from([OP_TEXT, OP_BINARY]))
    if opcode == OP_TEXT:
        message = draw(st.text(max_size=300) | json_like.map(bytes.decode)).encode()
    else:
        message = draw(payloads)
    bits = draw(st.integers(9, 15))
    client = PerMessageDeflate(True, True, 15, bits)
    data = bytes(client.encode(Frame(Opcode(opcode), message)).data)
    parts = split(data, draw(st.lists(st.integers(0, len(data)), max_size=4)))
    wire = b"".join(
        client_frame(OP_CONT if i else opcode, part, fin=i == len(parts) - 1, rsv=0 if i else 4)
        for i, part in enumerate(parts)
    )
    return opcode, message, wire


@given(st.lists(compressed_messages(), max_size=3), st.data())
@FUZZ
def test_compressed_client_messages_are_read(
    messages: list[tuple[int, bytes, bytes]], data: st.DataObject
) -> None:
    """Compressed messages (fragmented anywhere, any window), plain ones and pings between
    them, however the bytes arrive: the same messages, and no inflater left once read."""
    wire = b""
    expected: list[object] = []
    for opcode, message, frames in messages:
        wire += frames + client_frame(OP_PING, b"p") + client_frame(OP_TEXT, b"plain")
        expected += [
            TextMessage(message.decode()) if opcode == OP_TEXT else BinaryMessage(message),
            Ping(b"p"),
            TextMessage("plain"),
        ]
    parser = FrameParser(100_000, inflate=True)
    assert feed(parser, data.draw(chunkings(wire))) == expected
    assert parser._inflater is None


def test_a_decompression_bomb_is_refused_with_1009() -> None:
    """10 MB of zeros compress to about 10 KB; the limit is 64 KiB: 1009, and the inflater
    produced at most the limit and a byte on the way."""
    bomb = client_compressed(b"\x00" * 10_000_000, 15)
    assert len(bomb) < 20_000
    parser = FrameParser(65536, inflate=True)
    assert parser.feed(client_frame(OP_BINARY, bomb, rsv=4)) == [
        ProtocolError(1009, "message too big once inflated")
    ]
    assert parser._inflater is None
    # fragmented: the bound is the message's, over all its frames
    half = b"\x00" * 40_000
    data = client_compressed(half + half, 15)
    first, second = data[:10], data[10:]
    parser = FrameParser(65536, inflate=True)
    events = parser.feed(client_frame(OP_BINARY, first, fin=False, rsv=4) + client_frame(OP_CONT, second))
    assert events == [ProtocolError(1009, "message too big once inflated")]


def test_an_inflater_bounds_every_feed_together() -> None:
    data = client_compressed(b"y" * 1000, 15)
    inflater = Inflater(1000)
    assert inflater.feed(data[:5], False) + inflater.feed(data[5:], True) == b"y" * 1000
    with pytest.raises(InflateError) as caught:
        Inflater(999).feed(data, True)
    assert caught.value.code == 1009


@pytest.mark.parametrize(
    ("wire", "code", "reason"),
    [
        (client_frame(OP_TEXT, b"\xff\xff\xff\xff", rsv=4), 1002, "invalid compressed data"),
        (
            client_frame(OP_TEXT, b"x", fin=False, rsv=4) + client_frame(OP_CONT, b"y", rsv=4),
            1002,
            "reserved bits set",
        ),
        (client_frame(OP_PING, b"", rsv=4), 1002, "reserved bits set"),
        (client_frame(OP_TEXT, b"", rsv=2), 1002, "reserved bits set"),
        (client_frame(OP_TEXT, b"", rsv=6), 1002, "reserved bits set"),
        (
            client_frame(OP_TEXT, b"x", fin=False) + client_frame(OP_TEXT, b"\xff", rsv=4),
            1002,
            "new message before the fragmented one ended",
        ),
        (
            client_frame(OP_TEXT, client_compressed("é".encode()[:1] * 3, 15), rsv=4),
            1007,
            "text message is not UTF-8",
        ),
        (client_frame(OP_BINARY, os.urandom(2000), rsv=4), 1009, "message over 1000 bytes"),
    ],
)
def test_compressed_frames_that_break_a_rule(wire: bytes, code: int, reason: str) -> None:
    parser = FrameParser(1000, inflate=True)
    events = parser.feed(wire)
    assert events[-1] == ProtocolError(code, reason)
    assert parser._inflater is None
    assert parser.feed(client_frame(OP_TEXT, b"more")) == []


def test_a_compressed_frame_may_be_a_little_longer_than_the_limit() -> None:
    """Data deflate cannot shrink grows by a few bytes: a message of the limit still fits."""
    message = os.urandom(1000)
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = (z.compress(message) + z.flush(zlib.Z_SYNC_FLUSH))[:-4]
    assert len(data) > 1000
    assert FrameParser(1000, inflate=True).feed(client_frame(OP_BINARY, data, rsv=4)) == [
        BinaryMessage(message)
    ]


def test_rsv1_without_negotiation_is_a_protocol_error() -> None:
    assert FrameParser(1000).feed(client_frame(OP_TEXT, b"x", rsv=4)) == [
        ProtocolError(1002, "reserved bits set")
    ]


# Chained publications (DeflateSender) ----------------------------------------------------------


class ContextClient:
    """A client that keeps its inflate window between messages (``websockets``' decoder, no
    ``server_no_context_takeover``): the messages of one connection decoded in order."""

    def __init__(self, bits: int = 15) -> None:
        self._decoder = PerMessageDeflate(False, True, bits, 15)  # remote = the server

    def read(self, frame: bytes) -> bytes:
        [(fin, rsv, opcode, payload)] = server_frames(frame)
        assert fin and rsv in (0, 4)
        decoded = self._decoder.decode(Frame(Opcode(opcode), payload, True, rsv == 4), max_size=None)
        return bytes(decoded.data)


def ticker(offset: int, channel: str = "c", price: float = 100.0) -> EncodedPublication:
    data = {"sym": "ABC", "price": price + offset / 100, "book": [[price - i, 10 * i] for i in range(30)]}
    return EncodedPublication(Publication(channel, offset, "e", f"id{offset}", 0, "message", data))


def fanned_out(publications: list[EncodedPublication]) -> list[EncodedPublication]:
    """Link each to the one before it on its channel, as the hub does during a fan-out."""
    last: dict[str, EncodedPublication] = {}
    for encoded in publications:
        encoded.previous = last.get(encoded.publication.channel)
        last[encoded.publication.channel] = encoded
    return publications


def test_consecutive_publications_go_chained_and_are_read_by_a_client_that_keeps_its_window() -> None:
    deflate = negotiate("permessage-deflate; client_max_window_bits", 256)
    assert deflate is not None and deflate.chained
    sender, client = DeflateSender(deflate), ContextClient()
    feed_ = fanned_out([ticker(i) for i in range(1, 6)])
    frames = [sender.publication(encoded) for encoded in feed_]
    assert [client.read(f) for f in frames] == [e.ws_text.encode() for e in feed_]
    alone = [e.ws_deflated(deflate) for e in feed_]
    assert frames[0] == alone[0]  # nothing before it
    assert all(len(f) * 3 < len(a) for f, a in zip(frames[1:], alone[1:], strict=True))
    # built once per publication: a second subscriber gets the very same frames
    other = DeflateSender(deflate)
    assert all(other.publication(e) is f for e, f in zip(feed_, frames, strict=True))


def test_a_client_that_asked_for_no_server_context_gets_every_message_alone() -> None:
    deflate = negotiate("permessage-deflate; server_no_context_takeover", 256)
    assert deflate is not None and not deflate.chained
    sender = DeflateSender(deflate)
    for encoded in fanned_out([ticker(i) for i in range(1, 4)]):
        frame = sender.publication(encoded)
        assert frame is encoded.ws_deflated(deflate)
        assert reference_decode(frame, 15) == (OP_TEXT, encoded.ws_text.encode())  # a fresh decoder


def test_a_compressed_reply_ends_the_chain_and_an_uncompressed_message_does_not() -> None:
    deflate = negotiate("permessage-deflate", 256)
    assert deflate is not None
    sender, client = DeflateSender(deflate), ContextClient()
    a, b, c = fanned_out([ticker(1), ticker(2), ticker(3)])
    sent = [sender.publication(a), sender.message(b'{"op":"pong"}'), sender.publication(b)]
    assert sent[1][0] == 0x81  # too short: plain, the window unchanged
    assert sent[2] != b.ws_deflated(deflate)  # still chained to a
    sent += [sender.message(b"x" * 400), sender.publication(c)]
    assert sent[3][0] == 0xC1
    assert sent[4] == c.ws_deflated(deflate)  # the reply came between: c goes alone
    expected = [a.ws_text.encode(), b'{"op":"pong"}', b.ws_text.encode(), b"x" * 400, c.ws_text.encode()]
    assert [client.read(f) for f in sent] == expected


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "reply", "replay"]), st.integers(0, 3)),
        max_size=25,
    ),
    st.sampled_from([None, 9, 12, 15]),
)
def test_any_sequence_of_publications_replies_and_replays_is_read_exactly(
    script: list[tuple[str, int]], bits: int | None
) -> None:
    offer = "permessage-deflate" + ("" if bits is None else f"; server_max_window_bits={bits}")
    deflate = negotiate(offer, 64)
    assert deflate is not None
    sender, client = DeflateSender(deflate), ContextClient(bits or 15)
    last: dict[str, EncodedPublication] = {}
    for n, (what, size) in enumerate(script):
        if what == "reply":
            payload = b'{"op":"history","n":%d,"pad":"%s"}' % (n, b"y" * (size * 60))
            assert client.read(sender.message(payload)) == payload
            continue
        encoded = ticker(n, channel=what if what != "replay" else "a", price=size * 7.0)
        if what != "replay":  # a replay is read from history: linked to nothing
            encoded.previous = last.get(what)
            last[what] = encoded
        assert client.read(sender.publication(encoded)) == encoded.ws_text.encode()


def test_an_idle_connection_keeps_no_publication_alive() -> None:
    """After traffic, what a connection sent is the hub's to keep or drop: once the hub lets the
    channel's last publication go (the channel's last subscriber left), nothing of it (body,
    frames) stays alive for the connections that inflated it; while the hub keeps it, the next
    publication still goes chained."""
    deflate = negotiate("permessage-deflate", 256)
    assert deflate is not None
    senders = [DeflateSender(deflate) for _ in range(3)]
    a, b = fanned_out([ticker(1), ticker(2)])
    for sender in senders:
        assert sender.publication(a)[0] & 0x40
    assert all(s.publication(b) == b.ws_deflated(deflate, chained=True) for s in senders)
    gone = weakref.ref(b)
    del a, b  # the hub's last links to them
    gc.collect()
    assert gone() is None
    c = ticker(3)
    assert all(s.publication(c) == c.ws_deflated(deflate) for s in senders)  # alone: b is gone


def test_a_publication_too_short_to_compress_leaves_the_chain_as_it_was() -> None:
    deflate = negotiate("permessage-deflate", 256)
    assert deflate is not None
    sender, client = DeflateSender(deflate), ContextClient()
    a = ticker(1)
    tiny = EncodedPublication(Publication("t", 1, "e", "id", 0, "message", 1))
    b = ticker(2)
    fanned_out([a, tiny, b])
    sent = [sender.publication(a), sender.publication(tiny), sender.publication(b)]
    assert sent[1] is tiny.ws_frame  # plain: the client's window still ends with a
    assert sent[2] == b.ws_deflated(deflate, chained=True)
    assert [client.read(f) for f in sent] == [e.ws_text.encode() for e in (a, tiny, b)]


def test_consecutive_deltas_go_chained_and_the_hub_link_leaves_no_chain_behind() -> None:
    deflate = negotiate("permessage-deflate", 64)
    assert deflate is not None
    sender, client = DeflateSender(deflate), ContextClient()
    feed_ = fanned_out([ticker(i) for i in range(1, 5)])
    deltas = [feed_[0]] + [e.delta for e in feed_[1:]]
    assert all(d is not None for d in deltas)
    assert deltas[2] is not None and deltas[2].previous is deltas[1]  # delta after delta: linked
    frames = [sender.publication(d) for d in deltas if d is not None]
    assert [client.read(f) for f in frames] == [d.ws_text.encode() for d in deltas if d is not None]
    alone = deltas[3].ws_deflated(deflate) if deltas[3] is not None else b""
    assert len(frames[3]) < len(alone)  # the envelope it shares with the delta before it
    feed_[2].forget_previous()
    assert feed_[2].previous is None and deltas[2].previous is None


def test_a_publication_kept_after_its_fan_out_drops_what_only_the_fan_out_needed_and_still_answers() -> None:
    a, b = fanned_out([ticker(1), ticker(2)])
    frame, text, sse = b.ws_frame, b.ws_text, b.sse
    assert b.previous is a
    b.fanned_out()
    assert b.previous is None
    assert b.publication.data is None and b.publication.data_json is None
    # a late reader (a stream, a replay) still gets the same bytes, rebuilt from the body
    assert (b.ws_frame, b.ws_text, b.sse) == (frame, text, sse)
    trimmed = b.publication
    b.fanned_out()  # again (a channel's last publication kept twice): nothing more to drop
    assert b.publication is trimmed
