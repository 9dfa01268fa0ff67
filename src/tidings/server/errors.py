"""The one place exceptions become the app's HTTP answers: the JSON error body
(:mod:`tidings.core.wire.errors`) with a status.

Foreign exceptions (validation, routing, anything unexpected) are translated here, once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from tidings.core.wire.errors import error_body, error_code
from tidings.exceptions import TidingsError

__all__ = ["error_response", "install_error_handlers"]

log = logging.getLogger("tidings.server")


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(error_body(code, message), status, headers=headers, media_type="application/json")


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        loc = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{loc or 'body'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


async def _tidings_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TidingsError)
    headers = {"Retry-After": "1"} if exc.temporary else None
    return error_response(exc.http_status, exc.code, exc.message, headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(400, "bad_request", _describe_validation(exc))


# FastAPI's answer to a body its JSON parser gives up on: malformed, or nested deeper than
# Python's recursion limit lets it go (about 1,000 levels).
_UNPARSABLE_BODY = "There was an error parsing the body"


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = error_code(exc.status_code)
    message = str(exc.detail)
    if message == _UNPARSABLE_BODY:
        message = (
            "the body is not JSON, or nests too deep to parse (data may nest at most "
            "limits.max_json_depth levels)"
        )
    return error_response(exc.status_code, code, message, exc.headers)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(500, "internal", "internal error")


def install_error_handlers(app: Any) -> None:
    """Register the translations on a Starlette or FastAPI app."""
    app.add_exception_handler(TidingsError, _tidings_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
