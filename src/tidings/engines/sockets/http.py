"""Request heads, sans-I/O: which requests the fast server owns, and their parsed heads.

The fast server looks at the first bytes of a connection. :func:`match_route` decides from the
request line alone whether the request is one the fast path owns (``GET /ws``, ``/sse``,
``/stream``, ``/poll``, ``POST /api/publish``); every other request goes to the ASGI app
untouched, so most connections cost a few ``startswith`` here. For an owned route,
:class:`HeadParser` (httptools) reads the head. :func:`response_head` writes an answer's head.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

import httptools

__all__ = ["HeadError", "HeadParser", "RequestHead", "match_route", "response_head"]

Headers = list[tuple[bytes, bytes]]


def match_route(data: bytes, routes: tuple[bytes, ...]) -> bytes | bool | None:
    """The owned route ``data`` starts with; False if none; None if too short to tell.

    ``routes`` are request-line starts such as ``b"GET /ws"``; a path matches with or without a
    query string.
    """
    undecided = False
    for route in routes:
        end = len(route)
        if len(data) <= end:
            if route.startswith(data):
                undecided = True
            continue
        if data.startswith(route) and data[end] in b" ?":
            return route
    return None if undecided else False


class HeadError(Exception):
    """The request head is malformed (answer 400)."""


@dataclass(slots=True)
class RequestHead:
    method: str = ""
    path: str = ""
    query: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    raw_headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # names lower case
    upgrade: bool = False
    keep_alive: bool = True  # HTTP/1.1 without "Connection: close"
    version: str = "1.1"


class HeadParser:
    """Feed bytes until :meth:`feed` returns the head and the offset of the bytes after it."""

    __slots__ = ("_complete", "_head", "_parser", "_url")

    def __init__(self) -> None:
        self._head = RequestHead()
        self._url = b""
        self._complete = False
        self._parser = httptools.HttpRequestParser(self)

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head.raw_headers.append((name.lower(), value))
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers = self._head.headers
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_headers_complete(self) -> None:
        self._complete = True

    def feed(self, data: bytes) -> tuple[RequestHead, int] | None:
        """The head and the offset in ``data`` where the body or next protocol starts, once
        complete; None while more is needed. Raises :class:`HeadError`."""
        try:
            try:
                self._parser.feed_data(data)
            except httptools.HttpParserUpgrade as upgrade:
                return self._finish(True, int(upgrade.args[0]))
            if self._complete:
                return self._finish(False, len(data))
        except httptools.HttpParserError as exc:  # parse_url's too: a URL over 65,535 bytes
            raise HeadError(str(exc)) from None
        return None

    def _finish(self, upgrade: bool, offset: int) -> tuple[RequestHead, int]:
        head = self._head
        head.method = self._parser.get_method().decode("ascii")
        url = httptools.parse_url(self._url)
        head.path = url.path.decode("latin-1")
        head.query = url.query or b""
        head.upgrade = upgrade
        head.version = self._parser.get_http_version()
        head.keep_alive = bool(self._parser.should_keep_alive())
        return head, offset


_date: list[Any] = [0, b""]  # the second and its Date header value, formatted once a second


def http_date() -> bytes:
    """The ``Date`` header's value for now (RFC 9110 5.6.7)."""
    now = int(time.time())
    if _date[0] != now:
        _date[0], _date[1] = now, formatdate(now, usegmt=True).encode("ascii")
    value: bytes = _date[1]
    return value


_STATUS_LINES: dict[int, bytes] = {}


def response_head(status: int, headers: Headers, *, chunked: bool = False, keep_alive: bool = True) -> bytes:
    """An HTTP/1.1 response head with ``headers`` (``chunked``: a body of unknown length
    follows in chunks; otherwise ``headers`` say its length)."""
    line = _STATUS_LINES.get(status)
    if line is None:
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d %s" % (status, HTTPStatus(status).phrase.encode("ascii"))
    lines = [line]
    lines.append(b"date: " + http_date())
    lines.extend(name + b": " + value for name, value in headers)
    if chunked:
        lines.append(b"transfer-encoding: chunked")
    if not keep_alive:
        lines.append(b"connection: close")
    lines.append(b"\r\n")
    return b"\r\n".join(lines)
