from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from tidings.core.cursor import decode_cursor, encode_token
from tidings.core.events import Publication
from tidings.core.wire import SSEParser
from tidings.core.wire.frames import (
    SPLICE_FROM,
    EncodedPublication,
    encode_json,
    reply,
    ws_text_frame,
)

from ..helpers import pub
from ..strategies import channels, json_values


def test_encode_json_is_compact_utf8():
    assert encode_json({"a": [1, "é"]}) == '{"a":[1,"é"]}'.encode()


def test_reply_puts_op_and_ref_first():
    assert orjson.loads(reply("pong", 3)) == {"op": "pong", "ref": 3}
    assert reply("subscribed", 1, channel="c").startswith('{"op":"subscribed","ref":1')


def test_reply_without_ref_omits_it():
    assert orjson.loads(reply("error", None, code="bad_request")) == {"op": "error", "code": "bad_request"}


def test_encoded_publication_body_and_token_are_computed_once():
    p = pub(42)
    encoded = EncodedPublication(p)
    assert orjson.loads(encoded.body) == p.to_dict()
    assert encoded.token == encode_token(p.channel, p.position)


def test_ws_text_is_a_message_frame_with_the_channel_cursor_and_is_cached():
    p = pub(3)
    encoded = EncodedPublication(p)
    frame = orjson.loads(encoded.ws_text)
    assert frame == {"op": "message", **p.to_dict(), "cursor": encoded.token}
    assert encoded.ws_text is encoded.ws_text


def test_ws_frame_is_ws_text_in_one_text_frame_built_once():
    encoded = EncodedPublication(pub(3, data="x" * 300))  # past the 7-bit length
    assert encoded.ws_frame == ws_text_frame(encoded.ws_text.encode())
    assert encoded.ws_frame[:2] == b"\x81\x7e"
    assert encoded.ws_frame is encoded.ws_frame


def test_sse_is_an_event_with_the_cursor_as_id_and_is_cached():
    p = pub(3, event="typing")
    encoded = EncodedPublication(p)
    messages = SSEParser().feed(encoded.sse)
    assert len(messages) == 1
    assert messages[0].event == "typing"
    assert messages[0].last_event_id == encoded.token
    assert orjson.loads(messages[0].data) == {**p.to_dict(), "cursor": encoded.token}
    assert encoded.sse is encoded.sse


def test_ndjson_is_one_line_with_the_cursor_and_is_cached():
    p = pub(3)
    encoded = EncodedPublication(p)
    assert encoded.ndjson.endswith(b"\n")
    assert orjson.loads(encoded.ndjson) == {**p.to_dict(), "cursor": encoded.token}
    assert encoded.ndjson is encoded.ndjson


def test_with_cursor_adds_a_cursor_for_a_multi_channel_stream():
    encoded = EncodedPublication(pub(3))
    assert orjson.loads(encoded.with_cursor("abc.def"))["cursor"] == "abc.def"


@given(
    channel=channels,
    offset=st.integers(0, 2**53),
    data=json_values,
    event=st.text("abcxyz._-!~", min_size=1, max_size=10),
)
def test_every_transport_carries_the_same_publication_and_a_resumable_cursor(
    channel: str, offset: int, data: object, event: str
):
    p = Publication(channel, offset, "x7Kq", "id-1", 1700, event, data)
    encoded = EncodedPublication(p)
    expected = {**p.to_dict(), "cursor": encoded.token}
    assert orjson.loads(encoded.ws_text) == {"op": "message", **expected}
    assert orjson.loads(encoded.ndjson) == expected
    [message] = SSEParser().feed(encoded.sse)
    assert orjson.loads(message.data) == expected
    assert decode_cursor(message.last_event_id) == {channel: p.position}


# Any JSON, and any JSON padded past SPLICE_FROM so that it is spliced in (built rather than drawn
# long: forty drawn values made Hypothesis's input-too-slow health check fail under coverage).
@given(
    data=st.one_of(
        json_values,
        st.text(min_size=300, max_size=400),
        st.builds(
            lambda value, pad: {"value": value, "pad": "x" * pad},
            json_values,
            st.integers(SPLICE_FROM, 2 * SPLICE_FROM),
        ),
    )
)
def test_a_publication_carrying_its_data_json_encodes_to_the_same_bytes(data: object):
    # Node.publish hands the bytes of its check on (data_json); the fan-out splices them in.
    plain = Publication("c", 1, "x7Kq", "id-1", 1700, "message", data)
    carried = Publication("c", 1, "x7Kq", "id-1", 1700, "message", data, data_json=orjson.dumps(data))
    assert carried == plain
    assert EncodedPublication(carried).body == EncodedPublication(plain).body
    assert EncodedPublication(carried).ws_frame == EncodedPublication(plain).ws_frame
