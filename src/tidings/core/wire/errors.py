"""The JSON error body every refusal of tidings carries: ``{"error": {"code", "message"}}``.

Both engines and the app write it (HTTP answers, refused handshakes), so it lives here, once;
``server/errors.py`` turns exceptions into answers with it, and
:mod:`tidings.transports.http_errors` writes whole HTTP/1.1 refusals with it.
"""

from __future__ import annotations

import orjson

__all__ = ["error_body", "error_code"]

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "bad_request",
    409: "conflict",
    413: "too_large",
    414: "too_large",
    422: "bad_request",
    426: "upgrade_required",
    429: "rate_limited",
    431: "too_large",
    503: "unavailable",
}


def error_code(status: int) -> str:
    """The body's ``code`` for an HTTP status that has no more precise one."""
    return _HTTP_CODES.get(status, "internal" if status >= 500 else "bad_request")


def error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": {"code": code, "message": message}})
