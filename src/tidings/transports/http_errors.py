"""A whole HTTP/1.1 refusal, for the protocols that refuse a request before any ASGI app sees it
(a bad head, a head too large, a refused WebSocket handshake): the owned-socket engine and
tidings' uvicorn protocols (:mod:`tidings.engines.uvicorn_internals`)."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

from tidings.core.wire.errors import error_body, error_code

__all__ = ["http_error_response", "raw_error_response"]


def raw_error_response(
    status: int, message: str, code: str | None = None, headers: Mapping[str, str] | None = None
) -> bytes:
    """The status line, ``headers``, and the JSON error body; the connection closes after it."""
    body = error_body(code or error_code(status), message)
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n{extra}"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def http_error_response(status: int, message: str) -> bytes:
    """:func:`raw_error_response` of a refused request or WebSocket handshake: a 426 names the
    WebSocket version spoken (RFC 6455 4.4)."""
    extra = {"Sec-WebSocket-Version": "13"} if status == 426 else None
    return raw_error_response(status, message, headers=extra)
