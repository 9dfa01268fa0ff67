"""Byte-level framing for every transport, computed once per publication and shared."""

from tidings.core.wire.frames import EncodedPublication, encode_json, reply
from tidings.core.wire.ndjson import ndjson_line
from tidings.core.wire.sse import SSEParser, sse_comment, sse_event, sse_retry

__all__ = [
    "EncodedPublication",
    "SSEParser",
    "encode_json",
    "ndjson_line",
    "reply",
    "sse_comment",
    "sse_event",
    "sse_retry",
]
