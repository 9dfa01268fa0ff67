"""The proxies' rules (sans-I/O): what tidings asks the application's backend, and what it
accepts as an answer.

With ``[proxy.connect]``, ``[proxy.refresh]``, ``[proxy.subscribe]``, ``[proxy.publish]`` or
``[proxy.rpc]`` set, tidings POSTs a JSON object to the application and obeys the answer
(``docs/reference/proxy.md``). This module holds the shapes, once, for every transport and both
engines: :func:`request_body` builds what is sent, :func:`forwarded_headers` picks the client's
headers that go with it, :func:`parse_answer` reads the answer into a result or raises what the
client must be told, and :func:`refresh_delay` says when to ask again before a connection
expires. The I/O (one HTTP client pool, bounded concurrency, timeouts, metrics) is
:mod:`tidings.proxy`'s.

Answers: ``{"result": {...}}`` allows (the result's fields are checked strictly: a field of the
wrong type is a broken backend, not a refusal); ``{"error": {"code", "message"}}`` refuses with
that error (:func:`refusal`: a tidings error code; an unknown one becomes ``forbidden``;
``unavailable`` stays temporary); ``{"disconnect": {"code": 4000-4999, "reason"}}`` ends the
connection (:class:`ProxyDisconnect`). Anything else (another HTTP status, HTML, JSON of
another shape) raises :class:`~tidings.exceptions.Unavailable`: the client may retry.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

import orjson

from tidings.core.channels import validate_channel
from tidings.core.disconnect import CloseCode, Disconnect
from tidings.exceptions import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    TidingsError,
    TooLarge,
    Unauthorized,
    Unavailable,
)

__all__ = [
    "DEFAULT_FORWARD_HEADERS",
    "UNCHANGED",
    "BrokenAnswer",
    "ConnectResult",
    "ProxyDisconnect",
    "ProxyKind",
    "PublishResult",
    "RefreshResult",
    "RpcResult",
    "SubscribeResult",
    "forwarded_headers",
    "parse_answer",
    "refresh_delay",
    "refusal",
    "request_body",
]


class ProxyKind(StrEnum):
    CONNECT = "connect"
    REFRESH = "refresh"
    SUBSCRIBE = "subscribe"
    PUBLISH = "publish"
    RPC = "rpc"


DEFAULT_FORWARD_HEADERS: tuple[str, ...] = ("Cookie", "Authorization", "X-Request-ID")
#: Most server-side channels one connect result may name (a backend bug must not subscribe a
#: connection to a million channels).
MAX_SERVER_CHANNELS = 128
_MAX_USER = 200
_MAX_TEXT = 500


class _Unchanged:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNCHANGED"


#: A publish result without ``data``: the client's data is published as it is.
UNCHANGED: Any = _Unchanged()


@dataclass(frozen=True, slots=True)
class ConnectResult:
    """Who the backend says the client is; ``channels``: server-side subscriptions."""

    user: str
    expire_at: float | None
    info: Any
    channels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RefreshResult:
    """The connection's new expiry (None: it no longer expires) and, if given, new ``info``."""

    expire_at: float | None
    info: Any


@dataclass(frozen=True, slots=True)
class SubscribeResult:
    """The subscription is allowed (nothing more to say yet)."""


@dataclass(frozen=True, slots=True)
class PublishResult:
    """The publish is allowed; ``data`` replaces the client's unless :data:`UNCHANGED`."""

    data: Any


@dataclass(frozen=True, slots=True)
class RpcResult:
    """What goes back to the caller of an ``rpc`` (``null`` when the result has no data)."""

    data: Any


Result = ConnectResult | RefreshResult | SubscribeResult | PublishResult | RpcResult


class ProxyDisconnect(Forbidden):
    """The backend asked to end the connection: a WebSocket closes with :attr:`reason`; an
    HTTP request is refused (403, the reason as the message)."""

    def __init__(self, reason: Disconnect) -> None:
        super().__init__(reason.reason)
        self.reason = reason


_ERRORS: dict[str, type[TidingsError]] = {
    cls.code: cls for cls in (BadRequest, Unauthorized, Forbidden, NotFound, Conflict, TooLarge, RateLimited)
}


def refusal(code: str, message: str) -> TidingsError:
    """The error a backend's ``{"error": {...}}`` stands for: a refusal (HTTP 403 whatever the
    code, so that a refused connect is always told apart from a broken backend) carrying the
    backend's code when it is one of tidings' codes, else ``forbidden``; ``unavailable`` is
    temporary (503, WebSocket 1013) as when the backend is down."""
    if code == Unavailable.code:
        return Unavailable(message)
    base = _ERRORS.get(code, Forbidden)
    return _REFUSALS[base.code](message)


def _refusal_class(code: str) -> type[Forbidden]:
    return cast("type[Forbidden]", type(f"Refused_{code}", (Forbidden,), {"code": code, "__slots__": ()}))


_REFUSALS: dict[str, type[Forbidden]] = {code: _refusal_class(code) for code in _ERRORS}


# requests ---------------------------------------------------------------------------------------


def request_body(
    kind: ProxyKind,
    *,
    client: str,
    transport: str,
    user: str | None = None,
    **fields: Any,
) -> bytes:
    """The JSON POSTed to the ``kind`` proxy: ``client``, ``transport``, ``user`` once known
    (not on a connect without a token), and the kind's own ``fields`` (connect: ``data``,
    ``remote_addr``; subscribe: ``channel``; publish: ``channel``, ``data``; rpc: ``method``,
    ``data``). Fields given as None are left out, but ``data`` is sent as ``null``."""
    body: dict[str, Any] = {"client": client, "transport": transport}
    if user is not None:
        body["user"] = user
    for name, value in fields.items():
        if value is not None or name == "data":
            body[name] = value
    return orjson.dumps(body)


def forwarded_headers(
    names: Iterable[str], headers: Mapping[str, str], remote_addr: str | None
) -> dict[str, str]:
    """The client's headers that go with a proxy request: those of ``names`` that ``headers``
    (lower-case names) hold, plus ``X-Forwarded-For`` set to the client's address as tidings
    determined it (never the client's own ``X-Forwarded-For``, which anyone can write)."""
    picked = {}
    for name in names:
        value = headers.get(name.lower())
        if value is not None and name.lower() != "x-forwarded-for":
            picked[name] = value
    if remote_addr:
        picked["X-Forwarded-For"] = remote_addr
    return picked


def refresh_delay(expire_at: float, now: float, timeout: float) -> float:
    """Seconds from ``now`` (Unix s) until the refresh proxy should be asked about a connection
    that expires at ``expire_at``: early enough that a backend answering at its ``timeout``
    still answers before the expiry, and not before half the time left has passed."""
    left = expire_at - now
    return max(0.0, left - min(left / 2, timeout + 1.0))


# answers ----------------------------------------------------------------------------------------


class BrokenAnswer(Unavailable):
    """The backend answered, but not one of the three shapes (or not HTTP 200): to the client,
    the backend is unavailable; to the operator, it is broken (``reason``: ``status``, not
    HTTP 200; ``invalid``, not an answer)."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


def _broken(kind: ProxyKind, what: str, reason: str = "invalid") -> BrokenAnswer:
    return BrokenAnswer(f"the {kind.value} proxy is unavailable: {what}", reason)


def parse_answer(kind: ProxyKind, status: int, body: bytes) -> Result:
    """The result of a ``kind`` proxy's answer (HTTP ``status``, raw ``body``), or raise: the
    backend's refusal (:func:`refusal`), :class:`ProxyDisconnect`, or
    :class:`BrokenAnswer` (:class:`~tidings.exceptions.Unavailable`) when the answer is not one
    of the three shapes."""
    if status != 200:
        raise _broken(kind, f"it answered HTTP {status}", "status")
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise _broken(kind, "its answer is not JSON") from None
    if not isinstance(answer, dict):
        raise _broken(kind, "its answer is not a JSON object")
    if "disconnect" in answer:
        raise ProxyDisconnect(_disconnect(kind, answer["disconnect"]))
    if "error" in answer:
        error = answer["error"]
        if not isinstance(error, dict) or not isinstance(error.get("code"), str):
            raise _broken(kind, 'its "error" is not {"code": str, "message": str}')
        message = error.get("message")
        text = message if isinstance(message, str) and message else error["code"]
        raise refusal(error["code"], text[:_MAX_TEXT])
    result = answer.get("result")
    if not isinstance(result, dict):
        raise _broken(kind, 'its answer has no "result", "error" or "disconnect" object')
    try:
        return _RESULTS[kind](result)
    except (BadRequest, TypeError, ValueError) as exc:
        raise _broken(kind, f"its result is invalid: {exc}") from None


def _disconnect(kind: ProxyKind, value: object) -> Disconnect:
    if not isinstance(value, dict):
        raise _broken(kind, 'its "disconnect" is not {"code": int, "reason": str}')
    code, reason = value.get("code"), value.get("reason", "")
    if isinstance(code, bool) or not isinstance(code, int) or not 4000 <= code <= 4999:
        raise _broken(kind, 'its "disconnect" code must be an integer from 4000 to 4999')
    if not isinstance(reason, str):
        raise _broken(kind, 'its "disconnect" reason must be a string')
    # Close codes of the backend's own pass through as they are (the table lists tidings').
    return Disconnect(cast(CloseCode, code), reason[:120] or "disconnected by the application", False)


def _expire_at(result: Mapping[str, Any]) -> float | None:
    value = result.get("expire_at")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError("expire_at must be seconds since the epoch")
    return float(value)


def _connect(result: Mapping[str, Any]) -> ConnectResult:
    user = result.get("user", "")
    if not isinstance(user, str) or len(user) > _MAX_USER:
        raise ValueError(f"user must be a string of at most {_MAX_USER} characters")
    channels = result.get("channels", [])
    if not isinstance(channels, list) or len(channels) > MAX_SERVER_CHANNELS:
        raise ValueError(f"channels must be a list of at most {MAX_SERVER_CHANNELS} channel names")
    names = tuple(dict.fromkeys(validate_channel(name) for name in channels))
    return ConnectResult(user, _expire_at(result), result.get("info"), names)


def _refresh(result: Mapping[str, Any]) -> RefreshResult:
    return RefreshResult(_expire_at(result), result.get("info"))


def _subscribe(result: Mapping[str, Any]) -> SubscribeResult:
    return SubscribeResult()


def _publish(result: Mapping[str, Any]) -> PublishResult:
    return PublishResult(result.get("data", UNCHANGED))


def _rpc(result: Mapping[str, Any]) -> RpcResult:
    return RpcResult(result.get("data"))


_RESULTS: dict[ProxyKind, Callable[[Mapping[str, Any]], Result]] = {
    ProxyKind.CONNECT: _connect,
    ProxyKind.REFRESH: _refresh,
    ProxyKind.SUBSCRIBE: _subscribe,
    ProxyKind.PUBLISH: _publish,
    ProxyKind.RPC: _rpc,
}
