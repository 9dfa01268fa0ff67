"""The error tree of ``tidings.exceptions`` (not in core, but everything in core raises it)."""

from __future__ import annotations

import pytest

from tidings import exceptions as exc


@pytest.mark.parametrize(
    ("cls", "code", "status", "temporary", "parent"),
    [
        (exc.BadRequest, "bad_request", 400, False, exc.TidingsError),
        (exc.InvalidCursor, "bad_request", 400, False, exc.BadRequest),
        (exc.Unauthorized, "unauthorized", 401, False, exc.TidingsError),
        (exc.TokenExpired, "unauthorized", 401, False, exc.Unauthorized),
        (exc.Forbidden, "forbidden", 403, False, exc.TidingsError),
        (exc.NotFound, "not_found", 404, False, exc.TidingsError),
        (exc.Conflict, "conflict", 409, False, exc.TidingsError),
        (exc.TooLarge, "too_large", 413, False, exc.TidingsError),
        (exc.RateLimited, "rate_limited", 429, True, exc.TidingsError),
        (exc.Unavailable, "unavailable", 503, True, exc.TidingsError),
        (exc.Internal, "internal", 500, False, exc.TidingsError),
    ],
)
def test_each_error_carries_code_status_and_temporary(
    cls: type[exc.TidingsError], code: str, status: int, temporary: bool, parent: type
):
    error = cls("boom")
    assert isinstance(error, parent)
    assert (error.code, error.http_status, error.temporary) == (code, status, temporary)
    assert error.to_dict() == {"error": {"code": code, "message": "boom"}}
    assert str(error) == "boom"


def test_an_error_without_message_uses_its_code_as_text():
    error = exc.NotFound()
    assert error.message == "not found"
    assert str(error) == "not found"


def test_the_base_error_is_internal():
    error = exc.TidingsError()
    assert (error.code, error.http_status, error.temporary) == ("internal", 500, False)


def test_every_exported_error_is_a_tidings_error():
    for name in exc.__all__:
        assert issubclass(getattr(exc, name), exc.TidingsError)
