"""The Origin check (against cross-site WebSocket hijacking) and CORS answers for HTTP transports.

A browser sends ``Origin`` on every WebSocket handshake and on cross-origin fetches; other clients
usually send none. The rule, in :func:`origin_allowed`:

* no ``Origin`` header: allowed (a non-browser client; it carries no ambient browser credentials);
* ``allowed_origins`` set: the origin must match an entry. Entries are ``scheme://host[:port]``
  (compared case-insensitively, default ports implied: ``https://a.com`` = ``https://a.com:443``),
  ``https://*.example.com`` (any subdomain, at any depth, not ``example.com`` itself; same scheme
  and port), ``*`` (every origin, including ``null``) or ``null`` (sandboxed frames, ``file:``);
* ``allowed_origins`` empty: same-origin only (the origin's host and port equal the request's
  ``Host``), plus loopback origins (``http://localhost:3000``, ``http://127.0.0.1:5173``) so a
  development front end works. A page on another site cannot then drive a victim's browser into
  the hub.

:class:`CorsPolicy` computes the headers of preflight (``OPTIONS``) answers and of actual
responses: the origin is echoed (never ``*``, which browsers refuse with credentials),
``Access-Control-Allow-Credentials: true``, and ``Vary: Origin`` always, so caches keep answers
for different origins apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tidings.auth.limits import is_loopback_address

__all__ = [
    "DEFAULT_ALLOW_HEADERS",
    "DEFAULT_EXPOSE_HEADERS",
    "CorsPolicy",
    "OriginPolicy",
    "Preflight",
    "origin_allowed",
]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

# The policy is that of /sse, /stream and /poll (the server API answers no CORS): a preflight
# allows what those routes take and nothing more.
#: Request headers a cross-origin client may send: the credentials, SSE's resume header, the
#: poll's conditional request, and the no-cache a fetch-based reader may add.
DEFAULT_ALLOW_HEADERS: tuple[str, ...] = (
    "Authorization",
    "Last-Event-ID",
    "If-None-Match",
    "Cache-Control",
)
#: Response headers a cross-origin script may read.
DEFAULT_EXPOSE_HEADERS: tuple[str, ...] = ("ETag", "Retry-After", "Content-Type")
#: Methods the HTTP transports answer (anything else is 405).
DEFAULT_ALLOW_METHODS: tuple[str, ...] = ("GET", "OPTIONS")


@dataclass(frozen=True, slots=True)
class _Origin:
    scheme: str
    host: str
    port: int | None

    @classmethod
    def parse(cls, text: str) -> _Origin | None:
        """``scheme://host[:port]`` (IPv6 in brackets) or None when it is not an origin."""
        text = text.strip().rstrip("/").lower()
        try:
            parts = urlsplit(text)
            port = parts.port
        except ValueError:
            return None
        host = parts.hostname
        if not parts.scheme or not host or parts.path or parts.query or parts.fragment:
            return None
        if parts.username is not None or parts.password is not None:
            return None
        if port is None:
            port = _DEFAULT_PORTS.get(parts.scheme)
        return cls(parts.scheme, host, port)


@dataclass(frozen=True, slots=True)
class _Entry:
    origin: _Origin
    subdomains: bool  # https://*.example.com

    def matches(self, origin: _Origin) -> bool:
        if origin.scheme != self.origin.scheme or origin.port != self.origin.port:
            return False
        if self.subdomains:
            return origin.host.endswith("." + self.origin.host)
        return origin.host == self.origin.host


class OriginPolicy:
    """A parsed ``allowed_origins`` list; build once (:meth:`from_settings`), ask often."""

    __slots__ = ("_any", "_entries", "_null")

    def __init__(self, allowed_origins: Iterable[str]) -> None:
        self._any = False
        self._null = False
        entries: list[_Entry] = []
        for raw in allowed_origins:
            text = raw.strip().rstrip("/").lower()
            if text == "*":
                self._any = True
                continue
            if text == "null":
                self._null = True
                continue
            subdomains = "://*." in text
            parsed = _Origin.parse(text.replace("://*.", "://", 1))
            if parsed is None:
                raise ValueError(f"allowed origin {raw!r} is not scheme://host[:port]")
            entries.append(_Entry(parsed, subdomains))
        self._entries = tuple(entries)

    @classmethod
    def from_settings(cls, settings: Any) -> OriginPolicy:
        """The policy of ``settings.allowed_origins``."""
        return cls(settings.allowed_origins)

    @property
    def configured(self) -> bool:
        """Whether an allow-list is set (else only same-origin and loopback origins pass)."""
        return self._any or self._null or bool(self._entries)

    def allowed(self, origin: str | None, host: str | None = None) -> bool:
        """Whether a request with this ``Origin`` header (None: absent) may proceed.

        ``host`` is the request's ``Host`` header; it matters only when no allow-list is set.
        """
        if origin is None:
            return True
        if self._any:
            return True
        text = origin.strip()
        if text.lower() == "null":
            return self._null
        parsed = _Origin.parse(text)
        if parsed is None:
            return False
        if self.configured:
            return any(entry.matches(parsed) for entry in self._entries)
        if is_loopback_address(parsed.host.strip("[]")):
            return True
        return host is not None and _same_host(parsed, host)


def _same_host(origin: _Origin, host_header: str) -> bool:
    request = _Origin.parse(f"{origin.scheme}://{host_header.strip()}")
    return request is not None and request.host == origin.host and request.port == origin.port


def origin_allowed(settings: Any, origin_header: str | None, host: str | None = None) -> bool:
    """Whether ``origin_header`` passes ``settings.allowed_origins`` (see the module docstring).

    Parses the list on every call; hot paths keep an :class:`OriginPolicy` instead.
    """
    return OriginPolicy.from_settings(settings).allowed(origin_header, host)


@dataclass(frozen=True, slots=True)
class Preflight:
    """The answer to a CORS preflight: ``status`` (204 allowed, 403 refused) and its headers."""

    status: int
    headers: list[tuple[str, str]]


class CorsPolicy:
    """CORS headers for the HTTP transports and the API, on top of an :class:`OriginPolicy`.

    Headers are ``(name, value)`` string pairs; encode them as latin-1 for raw ASGI.
    """

    def __init__(
        self,
        origins: OriginPolicy,
        *,
        allow_headers: Sequence[str] = DEFAULT_ALLOW_HEADERS,
        expose_headers: Sequence[str] = DEFAULT_EXPOSE_HEADERS,
        allow_methods: Sequence[str] = DEFAULT_ALLOW_METHODS,
        max_age: int = 600,
        allow_credentials: bool = True,
    ) -> None:
        self.origins = origins
        self.allow_headers = tuple(allow_headers)
        self._allow_lower = {h.lower() for h in allow_headers}
        self.expose_headers = tuple(expose_headers)
        self.allow_methods = tuple(m.upper() for m in allow_methods)
        self.max_age = max_age
        self.allow_credentials = allow_credentials

    @classmethod
    def from_settings(cls, settings: Any, **options: Any) -> CorsPolicy:
        return cls(OriginPolicy.from_settings(settings), **options)

    def response_headers(self, origin: str | None, host: str | None = None) -> list[tuple[str, str]]:
        """Headers to add to an actual (non-preflight) response.

        ``Vary: Origin`` always; the CORS headers only when ``origin`` is present and allowed
        (a refused origin gets no CORS headers, so the browser hides the response from the page;
        the transport should refuse the request anyway, with 403).
        """
        headers = [("Vary", "Origin")]
        if origin is None or not self.origins.allowed(origin, host):
            return headers
        headers.append(("Access-Control-Allow-Origin", origin))
        if self.allow_credentials:
            headers.append(("Access-Control-Allow-Credentials", "true"))
        if self.expose_headers:
            headers.append(("Access-Control-Expose-Headers", ", ".join(self.expose_headers)))
        return headers

    def preflight(
        self,
        origin: str | None,
        request_method: str | None,
        request_headers: str | None = None,
        host: str | None = None,
    ) -> Preflight:
        """The answer to ``OPTIONS`` with ``Access-Control-Request-Method`` (and ``-Headers``).

        Refused (403, no CORS headers) when the origin is absent or not allowed, the method is
        not one this policy allows, or a requested header is not in ``allow_headers``.
        """
        vary = [("Vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers")]
        if origin is None or not self.origins.allowed(origin, host):
            return Preflight(403, vary)
        method = (request_method or "").strip().upper()
        if method not in self.allow_methods:
            return Preflight(403, vary)
        requested = [h.strip() for h in (request_headers or "").split(",") if h.strip()]
        if any(h.lower() not in self._allow_lower for h in requested):
            return Preflight(403, vary)
        headers = [
            *vary,
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Methods", ", ".join(self.allow_methods)),
            ("Access-Control-Allow-Headers", ", ".join(self.allow_headers)),
            ("Access-Control-Max-Age", str(self.max_age)),
        ]
        if self.allow_credentials:
            headers.append(("Access-Control-Allow-Credentials", "true"))
        return Preflight(204, headers)
