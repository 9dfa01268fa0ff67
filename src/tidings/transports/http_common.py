"""What the HTTP push transports share: request parsing, CORS, and the streaming subscriber.

SSE (:mod:`~tidings.transports.sse`), HTTP streaming (:mod:`~tidings.transports.http_stream`) and
long polling (:mod:`~tidings.transports.long_poll`) differ only in how they frame what a
subscription produces. Everything else lives here, once:

- :func:`parse_request` turns the query string and headers into a :class:`StreamRequest`
  (channels, merged resume positions, credentials, ``timeout``/``limit``), refusing a known
  parameter that is malformed with a :class:`~tidings.exceptions.TidingsError` answered as JSON
  and ignoring unknown ones (cache-busters, newer clients).
- :class:`StreamSubscriber` is the hub's subscriber and the node's connection for one request.
  While its channels are being subscribed (history read, recovery merged) it holds what
  arrives; then it hands a :class:`Sink` the ``ready`` notice (the position every following
  message comes after), the gaps, the recovered publications and, live, each publication with
  the stream's cursor.
- :func:`stream_coding` picks a stream's Content-Encoding (``sse.compression`` and the
  request's ``Accept-Encoding``).
- :func:`stream_config` gives a stream's numbers to its machine
  (:class:`~tidings.machines.stream.StreamMachine`: heartbeats, the slow-consumer rule and the
  replay allowance, the farewells and every end of a stream, for both engines' drivers).

Cursors on a stream over one channel are the channel's token, so the shared pre-encoded bytes of
:class:`~tidings.core.wire.frames.EncodedPublication` go out unchanged; a stream over several
channels splices its composite cursor (:meth:`EncodedPublication.with_cursor`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl

import orjson

from tidings.auth.apikeys import bearer_token
from tidings.auth.limits import ConnectionLease
from tidings.core.channels import validate_channel
from tidings.core.cursor import encode_token, positions_for
from tidings.core.delta import DeltaSubscriptions, check_delta, parse_delta
from tidings.core.disconnect import CloseCode, Disconnect
from tidings.core.events import Gap
from tidings.core.permissions import ANONYMOUS, Capability, Credentials, allowed
from tidings.core.position import Position
from tidings.core.proxy import ProxyKind
from tidings.core.recovery import Recovered
from tidings.core.wire.content_coding import StreamCoding, accepted_coding
from tidings.core.wire.errors import error_body
from tidings.core.wire.frames import EncodedPublication
from tidings.exceptions import BadRequest, Forbidden, TidingsError, Unavailable
from tidings.ids import random_id
from tidings.machines.backlog import close_timeout as backlog_close_timeout
from tidings.machines.stream import Framing, StreamConfig
from tidings.node import Node
from tidings.proxy import Caller
from tidings.settings import Settings

__all__ = [
    "ABORT_EXTENSION",
    "Framing",
    "Sink",
    "StreamRequest",
    "StreamSubscriber",
    "checked_request",
    "close_timeout",
    "cors_headers",
    "parse_request",
    "stream_coding",
    "stream_config",
]

Scope = dict[str, Any]
Receive = Any
Send = Any
Headers = list[tuple[bytes, bytes]]

#: The ASGI scope extension of ``tidings serve``'s HTTP protocol
#: (:class:`~tidings.engines.uvicorn_internals.GuardedHttpToolsProtocol`): ``{"abort": callable}`` cuts
#: the connection at once, which no ASGI message does (closing waits for the write buffer to
#: drain, for ever if the peer stopped reading). Elsewhere a stream's close timeout can only
#: give up its farewell.
ABORT_EXTENSION = "tidings.abort"

POLL_PARAMS = frozenset({"channel", "cursor", "token", "timeout", "limit"})
STREAM_PARAMS = frozenset({"channel", "cursor", "token", "delta"})
DEFAULT_POLL_TIMEOUT = 25.0
DEFAULT_POLL_LIMIT = 100


# request parsing ----------------------------------------------------------------------------


@dataclass(slots=True)
class StreamRequest:
    """A validated request: channels in the order given, resume positions, who is asking."""

    channels: tuple[str, ...]
    since: Mapping[str, Position]
    credentials: Credentials
    timeout: float
    limit: int
    headers: Mapping[str, str]
    cors: Headers
    #: The request counted as a connection (``[limits] max_connections_per_*``) until released.
    lease: ConnectionLease | None = None
    #: Cuts the connection at once (:data:`ABORT_EXTENSION`), if the server offers it.
    abort: Callable[[], None] | None = None
    #: The connection's id (the one the proxies were told).
    client_id: str = field(default_factory=random_id)
    #: The delta kind asked for (``delta=fossil``; streams only), see :mod:`tidings.core.delta`.
    delta: str | None = None

    def release(self) -> None:
        """Stop counting this request as a connection (idempotent): call it when it ends."""
        if self.lease is not None:
            self.lease.release()


def header_map(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}


def _query(scope: Scope, allowed_names: frozenset[str]) -> dict[str, list[str]]:
    raw = scope.get("query_string", b"").decode("latin-1")
    if "%" in raw or "+" in raw:
        try:
            pairs = parse_qsl(raw, keep_blank_values=True, errors="strict")
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("malformed query string") from None
    else:  # nothing to decode: what parse_qsl returns, without its cost on every poll
        pairs = [
            (name, value) for name, _, value in (field.partition("=") for field in raw.split("&") if field)
        ]
    query: dict[str, list[str]] = {}
    for name, value in pairs:
        # Unknown parameters are ignored (cache-busters such as jQuery's ``_=``, newer clients):
        # the rule of every transport, see docs/reference/protocol.md.
        if name in allowed_names:
            query.setdefault(name, []).append(value)
    return query


def _one(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest(f"{name} must be given at most once")
    return values[0]


def parse_timeout(value: str | None, cap: float) -> float:
    """Seconds to hold a poll: a finite number >= 0, capped by ``limits.max_poll_timeout``."""
    if value is None:
        return min(DEFAULT_POLL_TIMEOUT, cap)
    try:
        seconds = float(value)
    except ValueError:
        raise BadRequest("timeout must be a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise BadRequest("timeout must be a finite number of seconds >= 0")
    return min(seconds, cap)


def parse_limit(value: str | None, cap: int) -> int:
    """Most messages in one poll answer: an integer >= 1, capped by ``limits.history_limit``."""
    if value is None:
        return min(DEFAULT_POLL_LIMIT, cap)
    if not value.isascii() or not value.isdigit() or len(value) > 9 or int(value) < 1:
        raise BadRequest("limit must be an integer >= 1")
    return min(int(value), cap)


async def _channels(
    node: Node,
    names: list[str],
    credentials: Credentials,
    caller: Caller | None,
    server_channels: tuple[str, ...] = (),
) -> tuple[str, ...]:
    """The request's channels and the connect proxy's server-side ones, each allowed: by the
    permission rule, or by the subscribe proxy in a namespace that asks it."""
    if not names and not server_channels:
        raise BadRequest("give at least one channel: ?channel=NAME (repeatable)")
    channels = tuple(dict.fromkeys([*(validate_channel(name) for name in names), *server_channels]))
    most = node.settings.limits.max_subscriptions_per_connection
    if len(channels) > most:
        raise BadRequest(f"at most {most} channels per request")
    asks = []
    for channel in channels:
        if channel in server_channels:
            continue
        options = node.options(channel)
        if (
            caller is not None
            and options.subscribe_proxy
            and ProxyKind.SUBSCRIBE in node.proxies
            and not credentials.granted(Capability.SUBSCRIBE, channel)
        ):
            asks.append(node.proxies.subscribe(caller, credentials.user, channel))
        elif not allowed(Capability.SUBSCRIBE, channel, options, credentials):
            raise Forbidden(f"subscribe is not allowed on {channel}")
    if asks:
        await asyncio.gather(*asks)
    return channels


async def _connect(
    node: Node, headers: Mapping[str, str], query: Mapping[str, list[str]], caller: Caller | None
) -> tuple[Credentials, tuple[str, ...]]:
    """Who is asking: the token's credentials, or the connect proxy's answer (a request without
    a token, or any with ``skip_with_token = false``), with its server-side channels.
    EventSource sends no headers of its own, but the browser sends the cookies: the connect
    proxy gets them (``forward_headers``)."""
    token = bearer_token(headers.get("authorization")) or _one(query, "token")
    credentials = await node.security.credentials(token) if token else ANONYMOUS
    connect = node.proxies.endpoints.get(ProxyKind.CONNECT)
    if caller is None or connect is None or (token and connect.skip_with_token):
        return credentials, ()
    result = await node.proxies.connect(caller, user=credentials.user if token else None)
    if token and result.user and result.user != credentials.user:
        raise Forbidden("the connect proxy named another user than the token")  # as on WebSocket
    info = credentials.info if result.info is None else result.info
    user = result.user or credentials.user
    return Credentials(user, credentials.grants, result.expire_at, info), result.channels


async def parse_request(
    node: Node,
    scope: Scope,
    headers: Mapping[str, str],
    cors: Headers,
    *,
    poll: bool = False,
    last_event_id: bool = False,
) -> StreamRequest:
    """Validate a request of an HTTP push transport, or raise the TidingsError to answer.

    A valid request is counted as a connection while it is served (a stream while open, a long
    poll while held; :data:`StreamRequest.lease`): past ``max_connections_per_ip`` or
    ``max_connections_per_user`` it is refused with ``rate_limited`` (429).

    ``headers`` are the request's (lower-case names), ``cors`` the answer's CORS headers. Resume
    positions merge every ``cursor`` parameter and, for SSE, the ``Last-Event-ID`` header (the
    later position of a channel wins); a cursor naming a channel not requested is refused.

    With proxies configured, the connect proxy says who is asking (refused: 403 with the
    backend's error; unavailable: 503) and may add server-side channels, and the subscribe
    proxy allows the channels of the namespaces that ask it (docs/reference/proxy.md).
    """
    query = _query(scope, POLL_PARAMS if poll else STREAM_PARAMS)
    client_id = random_id()
    caller = None
    if node.proxies.endpoints:
        transport = "poll" if poll else "sse" if last_event_id else "stream"
        caller = node.proxies.caller(client_id, transport, headers, node.security.client_ip(scope))
    credentials, server_channels = await _connect(node, headers, query, caller)
    channels = await _channels(node, query.get("channel", []), credentials, caller, server_channels)
    cursors = list(query.get("cursor", []))
    if last_event_id and headers.get("last-event-id"):
        cursors.append(headers["last-event-id"])
    since = positions_for(cursors, channels) if cursors else {}
    limits = node.settings.limits
    timeout = parse_timeout(_one(query, "timeout"), limits.max_poll_timeout) if poll else 0.0
    limit = parse_limit(_one(query, "limit"), limits.history_limit) if poll else 0
    delta = parse_delta(_one(query, "delta"))
    if delta is not None:
        for channel in channels:
            check_delta(channel, node.options(channel))
    # Last, so that a refused request holds no count: from here the caller must release().
    lease = node.security.admit(scope, credentials.user)
    abort = scope.get("extensions", {}).get(ABORT_EXTENSION, {}).get("abort")
    return StreamRequest(
        channels, since, credentials, timeout, limit, headers, cors, lease, abort, client_id, delta
    )


# CORS -----------------------------------------------------------------------------------------


def _raw(pairs: list[tuple[str, str]]) -> Headers:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in pairs]


def cors_headers(node: Node, headers: Mapping[str, str]) -> Headers:
    """CORS response headers for a request; raises Forbidden for an origin not allowed.

    Requests without ``Origin`` (non-browser clients, same-origin GETs) are never refused. The
    rule and the headers are the node's one CORS policy (``tidings.auth.origins``).
    """
    origin = headers.get("origin")
    if origin is None:
        return []
    if not node.security.origins.allowed(origin, headers.get("host")):
        raise Forbidden(f"origin {origin[:100]!r} is not in allowed_origins")
    return _raw(node.security.cors.response_headers(origin, headers.get("host")))


def preflight(node: Node, headers: Mapping[str, str]) -> tuple[int, Headers]:
    """The answer to a CORS preflight (``OPTIONS``): 204 with the policy's headers, or 403."""
    answer = node.security.cors.preflight(
        headers.get("origin"),
        headers.get("access-control-request-method"),
        headers.get("access-control-request-headers"),
        headers.get("host"),
    )
    return answer.status, _raw(answer.headers)


# answering --------------------------------------------------------------------------------------


async def answer(
    send: Send, status: int, body: bytes, headers: Headers, content_type: bytes = b"application/json"
) -> None:
    """A complete, non-streaming response."""
    # 204 and 304 have no body, so no Content-Type or Content-Length (RFC 9110).
    all_headers = (
        []
        if status in (204, 304)
        else [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    )
    all_headers += headers
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


async def answer_error(send: Send, exc: TidingsError, cors: Headers) -> None:
    headers = list(cors)
    if exc.temporary:
        headers.append((b"retry-after", b"1"))
    await answer(send, exc.http_status, error_body(exc.code, exc.message), headers)


async def checked_request(
    node: Node,
    scope: Scope,
    headers: Mapping[str, str],
    send: Send,
    *,
    poll: bool = False,
    last_event_id: bool = False,
) -> StreamRequest | None:
    """A request of an HTTP push transport, validated (origin, method, draining, parameters),
    or None once its refusal has been answered as ``{"error": …}`` (with the CORS headers, so a
    browser can read it). Both engines admit requests here, so they refuse alike; the caller
    calls ``request.release()`` when the request ends."""
    cors: Headers = []
    try:
        cors = cors_headers(node, headers)
        method = scope.get("method", "GET")
        if method != "GET":
            await answer(
                send,
                405,
                error_body("bad_request", f"{method} is not allowed"),
                [*cors, (b"allow", b"GET, OPTIONS")],
            )
            return None
        if node.draining:
            raise Unavailable("the server is draining: reconnect to another node")
        return await parse_request(node, scope, headers, cors, poll=poll, last_event_id=last_event_id)
    except TidingsError as exc:
        await answer_error(send, exc, cors)
        return None


# the streaming subscriber -------------------------------------------------------------------


class Sink(Protocol):
    """Where a :class:`StreamSubscriber` puts what its subscriptions produce (synchronous)."""

    def ready(self, positions: dict[str, Position], cursor: str) -> None: ...

    def gap(self, gap: Gap, cursor: str) -> None: ...

    def publication(self, encoded: EncodedPublication, cursor: str, single: bool) -> None: ...


class CursorTracker:
    """A stream's cursor: its channels' latest tokens joined in channel order (see core.cursor)."""

    __slots__ = ("_tokens", "single")

    def __init__(self, positions: Mapping[str, Position]) -> None:
        self._tokens = {ch: encode_token(ch, positions[ch]) for ch in sorted(positions)}
        self.single = len(self._tokens) == 1

    @property
    def cursor(self) -> str:
        return ".".join(self._tokens.values())

    def advance(self, encoded: EncodedPublication) -> str:
        """Move past ``encoded`` and return the cursor to resume after it."""
        self._tokens[encoded.publication.channel] = encoded.token
        return encoded.token if self.single else ".".join(self._tokens.values())

    def move(self, channel: str, position: Position) -> str:
        """Set ``channel``'s position (after a gap into a new epoch); returns the cursor."""
        self._tokens[channel] = encode_token(channel, position)
        return self.cursor


class StreamSubscriber:
    """One HTTP request's subscriptions: a hub subscriber and a node connection.

    Lifecycle: :meth:`start` subscribes every channel (holding what arrives meanwhile), then feeds
    the sink ``ready``, gaps and recovered publications, then live ones; :meth:`close` leaves the
    hub and the node. :meth:`disconnect` (the node's ``/api/disconnect``, overflow, time limits)
    records why and calls ``on_end`` so the transport ends its response.
    """

    def __init__(self, node: Node, request: StreamRequest, transport: str, sink: Sink) -> None:
        self.node = node
        self.request = request
        self.transport = transport
        self.sink = sink
        self.client_id = request.client_id
        self.user = request.credentials.user
        self.closing: Disconnect | None = None
        self.gone = False
        self.on_end: list[Callable[[], None]] = []
        #: Where :meth:`close_info` comes from when a machine knows better (a stream's).
        self.info: Callable[[], tuple[int | None, str, str]] | None = None
        self._held: list[EncodedPublication | Gap] | None = []
        self._results: dict[str, Recovered] = {}
        self._tracker: CursorTracker | None = None
        self.deltas: DeltaSubscriptions | None = None
        if request.delta is not None:
            self.deltas = DeltaSubscriptions()
            for channel in request.channels:
                self.deltas.add(channel)

    # Subscriber ---------------------------------------------------------------------------------

    def deliver(self, publication: EncodedPublication) -> None:
        if self._held is not None:
            self._held.append(publication)
            return
        tracker = self._tracker
        assert tracker is not None
        if self.deltas is not None:
            publication = self.deltas.outgoing(publication)
        self.sink.publication(publication, tracker.advance(publication), tracker.single)

    def control(self, channel: str, message: dict[str, Any]) -> None:
        """A gap notice from the broker link (its store lost history under a live subscription)
        is passed on like a resume's gap, so the client is told before the new epoch's
        publications; join/leave messages are not sent on HTTP streams (presence is read by API).
        """
        if message.get("op") != "gap" or "requested" not in message:
            return
        if self.deltas is not None:
            self.deltas.restart(channel)
        epoch = str(message["epoch"])
        available = message.get("available_from")
        gap = Gap(channel, epoch, int(message["requested"]), available, Position(epoch, (available or 1) - 1))
        if self._held is not None:
            self._held.append(gap)
            return
        assert self._tracker is not None
        self.sink.gap(gap, self._tracker.move(channel, gap.position))

    # Connection ---------------------------------------------------------------------------------

    def close_info(self) -> tuple[int | None, str, str]:
        """``(code, reason, by)`` for the node's close log line and metrics."""
        if self.info is not None:
            return self.info()
        if self.gone:
            return int(CloseCode.GOING_AWAY), "client went away", "client"
        if self.closing is not None:
            return int(self.closing.code), self.closing.reason, "server"
        return None, "", "client"

    def disconnect(self, reason: Disconnect) -> None:
        if self.closing is None:
            self.closing = reason
        for callback in self.on_end:
            callback()

    # lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe every channel, then go live; raises (after leaving the hub) on failure."""
        self.node.register(self)
        try:
            for channel in self.request.channels:
                await self.node.subscribe(
                    self, channel, self.request.since.get(channel), self._on_ready(channel)
                )
        except BaseException:
            await self.close()
            raise
        self._go_live()

    def _on_ready(self, channel: str) -> Callable[[Recovered], None]:
        def ready(result: Recovered) -> None:
            assert self._held is not None
            self._results[channel] = result
            if result.gap is not None:
                self._held.append(result.gap)
            self._held.extend(EncodedPublication(p) for p in result.publications)

        return ready

    def _start_positions(self, held: list[EncodedPublication | Gap]) -> dict[str, Position]:
        """Each channel's position right before the first publication this stream sends."""
        positions = {ch: result.position for ch, result in self._results.items()}
        seen: set[str] = set()
        for item in held:
            if isinstance(item, EncodedPublication):
                pub = item.publication
                if pub.channel not in seen:
                    seen.add(pub.channel)
                    positions[pub.channel] = Position(pub.epoch, pub.offset - 1)
        return positions

    def _go_live(self) -> None:
        held, self._held = self._held or [], None
        positions = self._start_positions(held)
        tracker = self._tracker = CursorTracker(positions)
        sink = self.sink
        sink.ready(positions, tracker.cursor)
        for item in held:
            if isinstance(item, Gap):
                sink.gap(item, tracker.cursor)
            else:
                sink.publication(item, tracker.advance(item), tracker.single)

    async def close(self) -> None:
        for channel in self.request.channels:
            with contextlib.suppress(Exception):
                await self.node.unsubscribe(self, channel)
        self.node.unregister(self)

    def close_now(self) -> None:
        """:meth:`close` without waiting (the broker is told in the background)."""
        for channel in self.request.channels:
            self.node.leave_now(self, channel)
        self.node.unregister(self)


def ready_fields(positions: Mapping[str, Position], cursor: str) -> dict[str, Any]:
    """The ``ready`` notice's fields: where the stream starts, per channel and as a cursor."""
    return {"channels": {ch: pos.to_dict() for ch, pos in positions.items()}, "cursor": cursor}


def gap_fields(gap: Gap, cursor: str) -> dict[str, Any]:
    return {**gap.to_dict(), "cursor": cursor}


def farewell_fields(reason: Disconnect) -> dict[str, Any]:
    return {"code": int(reason.code), "reason": reason.reason, "reconnect": reason.reconnect}


# streaming ----------------------------------------------------------------------------------------

STREAM_HEADERS: Headers = [
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
    (b"x-content-type-options", b"nosniff"),
]


def close_timeout(settings: Settings) -> float:
    """:func:`tidings.machines.backlog.close_timeout` of ``settings``."""
    return backlog_close_timeout(settings.limits.idle_timeout)


def stream_coding(settings: Settings, request: StreamRequest) -> tuple[StreamCoding | None, Headers]:
    """The Content-Encoding of a stream's body (None: identity, the setting is off or the
    client's ``Accept-Encoding`` allows neither gzip nor deflate), and the headers that say it.

    With ``sse.compression`` on, every stream's answer varies with ``Accept-Encoding``.
    """
    if not settings.sse.compression:
        return None, []
    name = accepted_coding(request.headers.get("accept-encoding"))
    if name is None:
        return None, [(b"vary", b"accept-encoding")]
    coding = StreamCoding(name, settings.sse.compression_level)
    return coding, [(b"content-encoding", name.encode()), (b"vary", b"accept-encoding")]


def stream_config(settings: Settings, count_pending: bool = True) -> StreamConfig:
    """The numbers of :class:`~tidings.machines.stream.StreamMachine` from ``settings``
    (``count_pending``: see :class:`~tidings.machines.stream.StreamConfig`)."""
    return StreamConfig(
        heartbeat=settings.sse.heartbeat,
        outbox_bytes=settings.limits.outbox_bytes,
        close_timeout=close_timeout(settings),
        max_duration=settings.sse.max_duration,
        count_pending=count_pending,
    )


def encode(value: Any) -> bytes:
    return orjson.dumps(value)
