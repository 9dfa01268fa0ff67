"""Logging: readable lines by default, JSON lines when asked, request ids, no secrets.

:func:`configure_logging` installs one handler on the root logger (uvicorn's loggers propagate
to it) with:

- :class:`TextFormatter` (``log_format = "text"``) or :class:`JsonFormatter` (``"json"``: one
  object per line with ``time``, ``level``, ``logger``, ``message``, ``request_id`` and the
  record's structured ``fields``);
- :class:`RedactingFilter`, which masks tokens and keys in every record *before* formatting:
  ``token=``/``api_key=`` query parameters, ``Authorization``/``Bearer`` values, JWT-shaped
  strings and the configured secrets themselves. Anything that reaches a log goes through it.

:class:`RequestIdMiddleware` gives every HTTP request and WebSocket a request id (an incoming
``X-Request-ID`` if it is sane, else a new one), echoes it in the response's ``X-Request-ID``
header, puts it in a :mod:`contextvars` variable that the formatters read, and writes one access
line per HTTP request (``tidings.access``). Access lines are DEBUG lines unless
``access_log = true`` makes them INFO (probes and scrapes stay at DEBUG): formatting and writing
a line per request took half of a long-polling node's capacity at the default level, so a node
as it comes does not pay for it. :func:`access_level` is the one check both engines make.

Structured events use :func:`log_event`: the message is a readable summary and the fields travel
as ``extra={"fields": {...}}``, so the JSON formatter emits them as keys.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

import orjson

from tidings.auth.proxy import TrustedProxies, client_address
from tidings.ids import new_request_id
from tidings.settings import Settings

__all__ = [
    "JsonFormatter",
    "RedactingFilter",
    "RequestIdMiddleware",
    "TextFormatter",
    "access_level",
    "configure_logging",
    "log_event",
    "redact",
    "request_id",
    "secrets_of",
]

request_id: ContextVar[str | None] = ContextVar("tidings_request_id", default=None)

MASK = "***"
_SANE_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")


def request_id_for(incoming: str | None) -> str:
    """A request's id: the client's ``X-Request-ID`` if it is sane, else a new one."""
    return incoming if incoming is not None and _SANE_ID.match(incoming) else new_request_id()


_PATTERNS = [
    # query parameters and form fields carrying credentials
    (
        re.compile(
            r"(?i)\b((?:access_)?token|api_key|apikey|key|secret|password|signature)"
            r"=([^&\s\"']+)"
        ),
        r"\1=" + MASK,
    ),
    # Authorization headers, as headers or in reprs of header lists
    (
        re.compile(
            r"(?i)\b(authorization['\"]?\s*[:,=]\s*\(?(?-i:b)?['\"]?)(bearer\s+|basic\s+)?"
            r"[^'\"\s,)]+"
        ),
        r"\1\2" + MASK,
    ),
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"), "Bearer " + MASK),
    # JWT-shaped strings (three base64url parts, the first a JSON header)
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), MASK),
    # webhook secrets
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=_-]+"), "whsec_" + MASK),
]
_QUIET_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})

access_log = logging.getLogger("tidings.access")


def access_level(enabled: bool, path: str | None = None) -> int | None:
    """The level of a request's access line (``enabled``: the node's ``access_log`` setting;
    ``path``: a probe or scrape is quieter), or None when it would not be written; also the level
    of a request-scoped connection's lines (a poll's open and close). Cheap: the caller builds
    the line only when it gets a level."""
    level = logging.INFO if enabled and path not in _QUIET_PATHS else logging.DEBUG
    return level if access_log.isEnabledFor(level) else None


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with credentials masked (see the module docstring)."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def secrets_of(settings: Settings) -> list[str]:
    """Every secret value in ``settings`` (API keys, the token secret, receiver secrets)."""
    found = [settings.api_key or "", settings.token_secret or ""]
    found += [k.key for k in settings.api_keys]
    for receiver in settings.receivers.values():
        found += [receiver.secret] if isinstance(receiver.secret, str) else list(receiver.secret)
    return sorted((s for s in found if len(s) >= 4), key=len, reverse=True)


class RedactingFilter(logging.Filter):
    """Masks credentials in a record's message, arguments and fields (never drops a record)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = list(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: log it as it is, still redacted
            message = f"{record.msg} {record.args}"
        record.msg = redact(message, self.secrets)
        record.args = None
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            record.fields = {
                k: redact(v, self.secrets) if isinstance(v, str) else v for k, v in fields.items()
            }
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), self.secrets)
        return True


class TextFormatter(logging.Formatter):
    """``2026-01-01 12:00:00,000 INFO tidings.ws [req-id] message key=value …``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(rid)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        rid = request_id.get()
        record.rid = f" [{rid}]" if rid else ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = request_id.get()
        if rid:
            entry["request_id"] = rid
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                entry.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return orjson.dumps(entry, default=str).decode()


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``event`` with structured ``fields`` (readable text: ``event k=v …``)."""
    if not logger.isEnabledFor(level):
        return
    summary = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None and v != "")
    logger.log(level, "%s %s", event, summary, extra={"fields": {"event": event, **fields}})


def configure_logging(settings: Settings, stream: Any = None) -> logging.Handler:
    """Send every log record through one redacting handler in ``settings.log_format``."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    handler.addFilter(RedactingFilter(secrets_of(settings)))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_tidings", False):
            root.removeHandler(old)
    handler._tidings = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # httpx writes an INFO line per request: one per proxied connect, subscribe or publish, which
    # is an access log tidings does not keep at INFO either (see access_level); debug shows them.
    quiet = logging.DEBUG if settings.log_level == "debug" else logging.WARNING
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(quiet)
    return handler


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return None


class RequestIdMiddleware:
    """See the module docstring. Pure ASGI, so streaming responses pass through untouched."""

    def __init__(
        self, app: Any, trusted_proxies: TrustedProxies | None = None, access_log: bool = False
    ) -> None:
        self.app = app
        self.trusted = trusted_proxies if trusted_proxies is not None else TrustedProxies()
        self.access_log = access_log

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        rid = request_id_for(incoming)
        scope.setdefault("state", {})["request_id"] = rid
        token = request_id.set(rid)
        if kind == "websocket":
            # Not wrapped: a wrapper would sit on every frame of the connection's life. The
            # WebSocket endpoint adds the header to its accept from scope["state"].
            try:
                await self.app(scope, receive, send)
            finally:
                request_id.reset(token)
            return
        header = (b"x-request-id", rid.encode())
        status = 0
        started = time.monotonic()

        async def send_with_id(message: Any) -> None:
            nonlocal status
            if message["type"] in ("http.response.start", "websocket.accept"):
                status = message.get("status", 101)
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            path = scope.get("path", "")
            level = access_level(self.access_log, path)
            if kind == "http" and level is not None:
                query = scope.get("query_string", b"").decode("latin-1")
                log_event(
                    access_log,
                    "request",
                    level,
                    method=scope.get("method"),
                    path=path + (f"?{query}" if query else ""),
                    status=status or None,
                    duration_ms=round((time.monotonic() - started) * 1000, 1),
                    client=client_address(scope, self.trusted),
                )
            request_id.reset(token)
