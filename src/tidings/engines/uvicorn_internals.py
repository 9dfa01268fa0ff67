"""Everything tidings builds on the internals of uvicorn and of ``websockets``: the one module
that touches what those libraries neither export nor document, because no public extension point
does the job. Nothing else in tidings imports their private modules (a test checks it).

- :class:`GuardedHttpToolsProtocol`: uvicorn's httptools protocol with a request deadline against
  slowloris clients and a bound on the request head (it overrides the protocol's parser
  callbacks). uvicorn drops idle keep-alive connections, but not a connection that never sends a
  request or sends its head a byte at a time: here every request must arrive whole (head and
  body, or the head of an upgrade) within ``timeout_keep_alive`` seconds of the connection
  opening or of the request's first byte, else the connection is closed. ``tidings serve`` sets
  that timeout from ``limits.handshake_timeout``.
- :class:`TidingsWebSocketProtocol`: uvicorn's sans-I/O WebSocket protocol on a ``websockets``
  ``ServerProtocol`` with one correction (its undocumented ``recv_frame``): a Close frame in the
  middle of a fragmented message ends the connection with the normal closing handshake (RFC 6455
  5.4: control frames may be injected between fragments) instead of failing it with 1002
  (Autobahn case 7.1.5); and a bound on a message's frames (``limits.max_message_frames``, 1009
  past it): ``websockets`` bounds a message's bytes, not its frames, and a stream of empty
  continuation frames costs a parse and a list entry each. Refused handshakes get the JSON error
  body of every refusal of tidings. permessage-deflate is tidings' own
  (:mod:`tidings.core.wire.deflate`, through ``websockets``' public extension interface:
  :class:`DeflateFactory`), so both engines negotiate alike, with the same threshold and the same
  bound on what a client's message inflates to.
- What the owned-socket engine needs to live inside uvicorn: uvicorn's per-server state
  (:class:`ServerState`), whose ``connections`` uvicorn's graceful shutdown closes
  (:func:`track_connection`, :func:`forget_connection`); the app, which uvicorn loads on first use
  (:func:`load_config`); and handing a connection, with the bytes read so far, to uvicorn's HTTP
  protocol (:func:`hand_over`).
- The C mask helper that ships with ``websockets`` (:func:`apply_mask`).

These were written for and tested with the versions in :data:`SUPPORTED`, the range
``pyproject.toml`` allows (a test checks that the two agree; ``make test-bounds`` runs the engine
tests on the lowest and the highest). Importing this module with another version installed fails
at once, with an ImportError naming the versions supported, rather than later and obscurely. Its wait
for the client's answer to a close frame is the close-handshake timeout of every engine
(:func:`tidings.machines.backlog.close_timeout`), and a connection whose app has ended is cut
(reset) if the client has not taken everything within it.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import re
from collections.abc import Callable, Sequence
from typing import Any, cast

__all__ = [
    "RECENTLY_COMPRESSED",
    "SUPPORTED",
    "DeflateFactory",
    "GuardedHttpToolsProtocol",
    "RecentlyCompressed",
    "ServerState",
    "TidingsWebSocketProtocol",
    "apply_mask",
    "forget_connection",
    "hand_over",
    "load_config",
    "protocol_path",
    "track_connection",
    "unsupported_versions",
    "ws_protocol_path",
]

# name -> (lowest supported, first unsupported): the bounds of pyproject.toml's dependencies
SUPPORTED: dict[str, tuple[str, str]] = {"uvicorn": ("0.55", "0.56"), "websockets": ("17.0", "18")}


def _release(version: str) -> tuple[int, ...]:
    """``"0.55.0"`` → ``(0, 55, 0)``: the release numbers (a pre-release counts as its release)."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


def unsupported_versions(version: Callable[[str], str] = importlib.metadata.version) -> list[str]:
    """The installed packages of :data:`SUPPORTED` outside their range, as ``"name version"``."""
    found = []
    for name, (lowest, below) in SUPPORTED.items():
        try:
            installed = version(name)
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
            continue
        if not _release(lowest) <= _release(installed) < _release(below):
            found.append(f"{name} {installed}")
    return found


def _check_versions() -> None:
    found = unsupported_versions()
    if found:
        wanted = " ".join(f"'{name}>={lowest},<{below}'" for name, (lowest, below) in SUPPORTED.items())
        raise ImportError(
            f"tidings' serving engines build on internals of uvicorn and websockets and support "
            f"{wanted} only; installed: {', '.join(found)}. Install supported versions "
            f"(pip install {wanted}), or run the ASGI app (tidings.create_app()) on another server."
        )


_check_versions()  # before the imports below, which are the first to break on another version

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.exceptions import NegotiationError, PayloadTooBig, ProtocolError
from websockets.extensions.base import Extension, ServerExtensionFactory
from websockets.frames import CTRL_OPCODES, Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from tidings.core.wire.deflate import EXTENSION, Deflate, InflateError, Inflater, negotiate
from tidings.core.wire.frames import too_many_frames
from tidings.core.wire.websocket import HandshakeError, check_handshake, unmask
from tidings.engines.transport import cut
from tidings.machines.backlog import close_timeout
from tidings.transports.http_common import ABORT_EXTENSION
from tidings.transports.http_errors import http_error_response, raw_error_response

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - built for every platform websockets has wheels for
    apply_mask = unmask  # type: ignore[assignment]


class _HeadTooLarge(Exception):
    """Raised from a parser callback; httptools stops and raises its callback error."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    _deadline: asyncio.TimerHandle | None = None
    # The head limit (limits.max_header_bytes): httptools has none, and keeps a header's bytes
    # until its end, so an endless header would grow without bound. Counted twice: the URL and
    # headers as parsed (exact, for a head that ends), and the bytes of reads that held nothing
    # but an unfinished head (for one that does not end: memory stays under the limit plus one
    # read). Over it: 431, JSON body, connection closed.
    _max_head = 65536
    _head_size = 0  # URL and header bytes of the current head
    _head_bytes = 0  # bytes of reads that held only the current, unfinished head
    _heads = 0  # heads completed on this connection
    _in_body = False

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        node = getattr(config.app, "node", None)
        if node is not None:
            self._max_head = node.settings.limits.max_header_bytes

    def data_received(self, data: bytes) -> None:
        heads, in_body = self._heads, self._in_body
        super().data_received(data)
        if self._heads == heads and not in_body and not self._in_body:
            self._head_bytes += len(data)
            if self._head_bytes > self._max_head and not self.transport.is_closing():
                self._refuse_head()
        else:
            self._head_bytes = 0

    def _refuse_head(self) -> None:
        self.transport.write(raw_error_response(431, f"request head over {self._max_head} bytes"))
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        # the JSON error body every refusal of tidings has (uvicorn's is plain text); httptools
        # reports the exception _grow raises as a parser error
        if self._head_size > self._max_head:
            self._refuse_head()
            return
        self.transport.write(raw_error_response(400, "invalid HTTP request"))
        self.transport.close()

    def on_url(self, url: bytes) -> None:
        self._grow(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._grow(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _grow(self, n: int) -> None:
        self._head_size += n
        if self._head_size > self._max_head:
            raise _HeadTooLarge

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_size = 0
        self._arm()
        # ASGI has no way to cut a connection whose peer stopped reading (closing waits for the
        # write buffer to drain, for ever): the streams' close timeout uses this (ABORT_EXTENSION)
        self.scope.setdefault("extensions", {})[ABORT_EXTENSION] = {"abort": self._abort}

    def _abort(self) -> None:
        cut(self.transport)
        if self.cycle is not None:
            # now, not when the loop reports the connection lost: an app that returns at once
            # would be logged as "returned without completing response"
            self.cycle.disconnected = True

    def on_headers_complete(self) -> None:
        self._heads += 1
        self._in_body = True
        super().on_headers_complete()
        if self.parser.should_upgrade():
            self._disarm()  # the WebSocket protocol takes the connection from here

    def on_message_complete(self) -> None:
        self._in_body = False
        self._disarm()
        super().on_message_complete()

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.timeout_keep_alive, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def protocol_path() -> str:
    return f"{__name__}:{GuardedHttpToolsProtocol.__name__}"


class _TooManyFrames(PayloadTooBig):
    """A message in more frames than allowed: ``websockets`` closes with 1009 and this reason."""

    def __init__(self, reason: str) -> None:
        Exception.__init__(self, reason)
        self.reason = reason

    def set_current_size(self, current_size: int | None) -> None:
        return None

    def __str__(self) -> str:
        return self.reason


class _ServerProtocol(ServerProtocol):
    max_frames: int | None = None
    frames = 0  # frames of the fragmented message in progress

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.CLOSE:
            # The unfinished message is dropped; the close is answered as any other close.
            self.current_size = None
        elif frame.opcode is Opcode.CONT:
            self.frames += 1
            if self.max_frames is not None and self.frames > self.max_frames:
                raise _TooManyFrames(too_many_frames(self.max_frames).reason)
        elif not frame.fin and frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            self.frames = 1
        super().recv_frame(frame)


class RecentlyCompressed:
    """What :meth:`Deflate.compress` made of the messages sent last, by content, within
    ``budget`` bytes (the oldest forgotten first).

    An ASGI application hands the server each subscriber's copy of a publication's text, so
    the server would compress it once per subscriber; with this, a publication is compressed
    once and its fan-out finds it here (a lookup hashes and compares the message: far cheaper
    than deflating it).
    """

    def __init__(self, budget: int = 1 << 20) -> None:
        self.budget = budget
        self._items: dict[tuple[Deflate, bytes], bytes | None] = {}
        self._size = 0

    def compress(self, deflate: Deflate, payload: bytes) -> bytes | None:
        if len(payload) < deflate.threshold:
            return None
        key = (deflate, payload)
        items = self._items
        if key in items:
            return items[key]
        data = items[key] = deflate.compress(payload)
        self._size += len(payload)
        while self._size > self.budget:  # dicts keep their order: the first is the oldest
            oldest = next(iter(items))
            del items[oldest]
            self._size -= len(oldest[1])
        return data


#: One per process: every connection of every ASGI server in it shares it.
RECENTLY_COMPRESSED = RecentlyCompressed()


class _DeflateExtension(Extension):
    """A negotiated :class:`~tidings.core.wire.deflate.Deflate` as a ``websockets`` extension:
    a client's compressed message inflated (bounded), a whole message sent compressed when the
    outcome says so."""

    name = EXTENSION  # type: ignore[assignment]

    def __init__(self, deflate: Deflate) -> None:
        self.deflate = deflate
        self.inflater: Inflater | None = None  # while a compressed message is read

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        if frame.opcode in CTRL_OPCODES:
            return frame
        if frame.opcode is Opcode.CONT:
            if self.inflater is None:
                return frame
            if frame.rsv1:
                raise ProtocolError("RSV1 set on a continuation frame")
        elif not frame.rsv1:
            return frame
        else:
            self.inflater = Inflater(2**62 if max_size is None else max_size)
        inflater = self.inflater
        if frame.fin:
            self.inflater = None
        try:
            data = inflater.feed(bytes(frame.data), frame.fin)
        except InflateError as exc:
            if exc.code == 1009:
                raise PayloadTooBig(None, max_size or 0) from None
            raise ProtocolError(exc.reason) from None
        return Frame(frame.opcode, data, frame.fin, False, frame.rsv2, frame.rsv3)

    def encode(self, frame: Frame) -> Frame:
        if frame.opcode not in (Opcode.TEXT, Opcode.BINARY) or not frame.fin:
            return frame  # a fragmented message goes uncompressed, all its frames
        data = RECENTLY_COMPRESSED.compress(self.deflate, bytes(frame.data))
        if data is None:
            return frame
        return Frame(frame.opcode, data, True, True, frame.rsv2, frame.rsv3)


class DeflateFactory(ServerExtensionFactory):
    """permessage-deflate negotiated by :func:`tidings.core.wire.deflate.negotiate` (the
    ``websockets`` server hands it each offer in turn)."""

    name = EXTENSION  # type: ignore[assignment]

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold

    def process_request_params(
        self, params: Sequence[tuple[str, str | None]], accepted_extensions: Sequence[Extension]
    ) -> tuple[list[tuple[str, str | None]], Extension]:
        if any(other.name == self.name for other in accepted_extensions):
            raise NegotiationError(f"skipped duplicate {self.name}")
        offer = "; ".join([EXTENSION, *(n if v is None else f"{n}={v}" for n, v in params)])
        deflate = negotiate(offer, self.threshold)
        if deflate is None:
            raise NegotiationError(f"declined {offer}")
        return list(deflate.params), _DeflateExtension(deflate)


class TidingsWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol on :class:`_ServerProtocol` (see the docstring),
    with a message's frames bounded by ``limits.max_message_frames``."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # uvicorn made a plain ServerProtocol, nothing read or sent yet: in its place, one of the
        # subclass made with the same arguments (uvicorn's extensions, frame limit and logger)
        node = getattr(config.app, "node", None)
        extensions = self.conn.available_extensions
        if node is not None:
            websocket = node.settings.websocket
            extensions = [DeflateFactory(websocket.compression_threshold)] if websocket.compression else []
        conn = _ServerProtocol(extensions=extensions, max_size=config.ws_max_size, logger=self.conn.logger)
        if node is not None:
            limits = node.settings.limits
            conn.max_frames = limits.max_message_frames
            # the wait for the client's answer to our close frame: the one close-handshake
            # timeout of every engine (uvicorn's own is 10 s)
            self.close_timeout = close_timeout(limits.idle_timeout)
        self.conn = conn

    async def run_asgi(self) -> None:
        await super().run_asgi()
        # The app is done. uvicorn then closes the transport, which first writes what it holds:
        # a client that reads nothing would hold the connection for ever. It gets the close
        # timeout, then is cut.
        if self.handshake_complete:
            self.loop.call_later(self.close_timeout, cut, self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if (
            self.handshake_complete
            and self.initial_response is None
            and self.conn.close_rcvd is None
            and self.conn.close_sent is None
        ):
            # gone without a close frame: 1006 (abnormal closure, RFC 6455 7.1.5) for the app,
            # which reads this first; uvicorn's own says 1005 (that of an empty close frame)
            self.queue.put_nowait({"type": "websocket.disconnect", "code": 1006})
        super().connection_lost(exc)

    def handle_connect(self, event: Request) -> None:
        # websockets refuses a malformed upgrade with a text/plain 400 (426 for another version
        # too, without naming ours): the same check and JSON answer as the owned-socket engine
        headers: dict[str, str] = {}
        for name, value in event.headers.raw_items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        try:
            check_handshake("GET", headers)
        except HandshakeError as exc:
            self.handshake_initiated = self.handshake_complete = self.close_sent = True
            self.transport.write(http_error_response(exc.status, exc.message))
            self.transport.close()
            return
        super().handle_connect(event)

    def handle_handshake_exception(self) -> None:
        # websockets could not read the upgrade request: its own answer (414 or 431 past its
        # line and header limits, else none) becomes a JSON error like every other refusal
        output = b"".join(self.conn.data_to_send())
        status = int(output[9:12]) if output[9:12].isdigit() else 400
        self.handshake_complete = True
        self.close_sent = True
        exc = self.conn.handshake_exc
        reason = exc.__cause__ or exc if exc is not None else "invalid request"
        self.transport.write(raw_error_response(status, f"invalid WebSocket handshake: {reason}"))
        self.transport.close()


def ws_protocol_path() -> str:
    return f"{__name__}:{TidingsWebSocketProtocol.__name__}"


def track_connection(server_state: ServerState, protocol: asyncio.Protocol) -> None:
    """Count ``protocol`` among the server's connections: uvicorn's graceful shutdown calls its
    ``shutdown()`` (which ``protocol`` must have) and waits for it to be forgotten."""
    cast(set[asyncio.Protocol], server_state.connections).add(protocol)


def forget_connection(server_state: ServerState, protocol: asyncio.Protocol) -> None:
    cast(set[asyncio.Protocol], server_state.connections).discard(protocol)


def load_config(config: Config) -> None:
    """Load the app (and the rest of ``config``) if uvicorn has not yet: a protocol may be made
    before uvicorn's own would have done it."""
    if not config.loaded:
        config.load()


def hand_over(
    transport: asyncio.Transport,
    data: bytes,
    config: Config,
    server_state: ServerState,
    app_state: dict[str, Any],
    loop: asyncio.AbstractEventLoop,
) -> None:
    """Give a connection whose first ``data`` was read elsewhere to uvicorn's HTTP protocol (the
    ASGI app), as if uvicorn had accepted it itself."""
    protocol = GuardedHttpToolsProtocol(
        config=config, server_state=server_state, app_state=app_state, _loop=loop
    )
    protocol.connection_made(transport)
    transport.set_protocol(protocol)
    protocol.data_received(data)
