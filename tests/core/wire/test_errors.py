"""The JSON error body every refusal carries, and the code an HTTP status gets by default."""

from __future__ import annotations

import orjson
import pytest

from tidings.core.wire.errors import error_body, error_code


def test_the_body_is_the_error_object_with_code_and_message():
    body = error_body("too_large", "request head over 8192 bytes")
    assert orjson.loads(body) == {"error": {"code": "too_large", "message": "request head over 8192 bytes"}}


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "bad_request"),
        (404, "not_found"),
        (405, "bad_request"),
        (413, "too_large"),
        (426, "upgrade_required"),
        (431, "too_large"),
        (503, "unavailable"),
        (418, "bad_request"),
        (500, "internal"),
        (502, "internal"),
    ],
)
def test_a_status_without_a_precise_code_gets_the_generic_one(status: int, code: str):
    assert error_code(status) == code
