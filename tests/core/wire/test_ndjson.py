from __future__ import annotations

import orjson
import pytest
from hypothesis import given

from tidings.core.wire.ndjson import ndjson_line

from ..strategies import json_values


def test_ndjson_line_appends_a_newline():
    assert ndjson_line(b'{"a":1}') == b'{"a":1}\n'


@pytest.mark.parametrize("bad", [b'{"a":\n1}', b'{"a":\r1}'])
def test_ndjson_line_refuses_raw_line_ends(bad: bytes):
    with pytest.raises(ValueError, match="raw newlines"):
        ndjson_line(bad)


@given(json_values)
def test_ndjson_lines_round_trip_any_json_value_on_one_line(value: object):
    line = ndjson_line(orjson.dumps(value))
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert b"\r" not in line
    assert orjson.loads(line) == value


@given(json_values.filter(lambda v: True), json_values)
def test_a_stream_of_ndjson_lines_splits_back_into_its_values(a: object, b: object):
    stream = ndjson_line(orjson.dumps(a)) + ndjson_line(orjson.dumps(b))
    assert [orjson.loads(line) for line in stream.splitlines()] == [a, b]
