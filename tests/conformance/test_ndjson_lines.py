"""Publications survive line readers that also break at U+0085, U+2028 and U+2029.

httpx's ``Response.aiter_lines()`` (and ``str.splitlines()``) treat those as line ends; JSON and
the SSE spec do not, and orjson writes them raw. tidings escapes them in every encoded
publication (``core.wire.frames.line_safe``), so an NDJSON or SSE line is one line to any reader.
"""

from __future__ import annotations

import httpx
import orjson

from tidings.core.events import Publication
from tidings.core.wire.frames import EncodedPublication, line_safe

TRICKY = "a\u2028b\u2029c\x85d \u2027 \u202a ☃ 😀"


def publication(data: object) -> Publication:
    return Publication("c", 1, "e", "id", 0, "message", data)


def test_line_safe_keeps_the_json_value_and_leaves_no_raw_line_break():
    raw = orjson.dumps({"d": TRICKY})
    safe = line_safe(raw)
    assert orjson.loads(safe) == {"d": TRICKY}
    assert "\u2028" not in safe.decode() and "\u2029" not in safe.decode()
    assert "\x85" not in safe.decode()
    assert line_safe(b'{"plain":"ascii"}') == b'{"plain":"ascii"}'


def test_every_transport_encoding_is_one_line_to_httpx_line_reader():
    encoded = EncodedPublication(publication({"text": TRICKY, "list": [TRICKY]}))
    ndjson = encoded.ndjson.decode()
    assert httpx._decoders.LineDecoder().decode(ndjson) == [ndjson.rstrip("\n")]
    assert orjson.loads(ndjson)["data"] == {"text": TRICKY, "list": [TRICKY]}
    assert orjson.loads(encoded.ws_text)["data"]["text"] == TRICKY
    data_lines = [line for line in encoded.sse.decode().split("\n") if line.startswith("data:")]
    assert len(data_lines) == 1 and orjson.loads(data_lines[0][5:])["data"]["text"] == TRICKY
