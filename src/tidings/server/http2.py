"""Serving over HTTP/2 with Hypercorn (``tidings serve --http2``).

Uvicorn speaks HTTP/1.1 only. Over HTTP/1.1 a browser opens at most six connections per origin,
so a page with many EventSource streams stalls; over HTTP/2 every stream shares one connection.
Browsers use HTTP/2 only over TLS (ALPN ``h2``), so give ``--certfile`` and ``--keyfile``; without
them Hypercorn serves HTTP/1.1 plus cleartext h2c (prior knowledge or ``Upgrade``) for
non-browser clients and proxies. The same app factory works from Hypercorn's command line::

    hypercorn --certfile cert.pem --keyfile key.pem --bind 127.0.0.1:8600 \\
        'tidings.server.app:create_app()'
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import hypercorn.protocol.h2
import hypercorn.protocol.h11
from hypercorn.asyncio import serve
from hypercorn.config import Config
from hypercorn.protocol.events import Event, StreamClosed
from hypercorn.protocol.ws_stream import ASGIWebsocketState, WSStream
from hypercorn.utils import LifespanFailureError
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection

from tidings.exceptions import TidingsError
from tidings.server.app import create_app
from tidings.settings import Settings

__all__ = ["hypercorn_config", "run_http2", "serve_http2"]


class _WSStream(WSStream):
    """Hypercorn's WebSocket stream, telling the app the close code the client sent.

    Hypercorn answers a client's close frame and then reports the stream's end to the app as
    ``websocket.disconnect`` 1006 (abnormal closure) unless the app had closed first, so every
    normal client close was logged (and counted) as 1006. The code is kept here when Hypercorn
    echoes it, and given to the app instead.
    """

    peer_close: int | None = None

    async def _send_wsproto_event(self, event: Any) -> None:
        if isinstance(event, CloseConnection) and self.connection.state == ConnectionState.REMOTE_CLOSING:
            self.peer_close = event.code  # the echo of the client's close frame
        await super()._send_wsproto_event(event)

    async def handle(self, event: Event) -> None:
        if (
            isinstance(event, StreamClosed)
            and self.peer_close is not None
            and self.app_put is not None
            and not self.closed
            and self.state == ASGIWebsocketState.CONNECTED
        ):
            self.closed = True
            await self.app_put({"type": "websocket.disconnect", "code": self.peer_close})
            return
        await super().handle(event)


def _use_our_websocket_stream() -> None:
    # Hypercorn has no setting for its stream class: its protocols name it at import.
    for module in (hypercorn.protocol.h11, hypercorn.protocol.h2):
        setattr(module, "WSStream", _WSStream)  # noqa: B010 (not an exported name, for mypy)


def hypercorn_config(settings: Settings, *, certfile: Path | None = None, keyfile: Path | None = None) -> Any:
    """Hypercorn's config for ``settings`` (HTTP/2 by ALPN when a certificate is given)."""
    config = Config()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config.bind = [f"{host}:{settings.port}"]
    config.alpn_protocols = ["h2", "http/1.1"]
    config.loglevel = settings.log_level.upper()
    # Hypercorn's loggers, through the logging set-up of run_http2 (not a second stderr handler).
    config.errorlog = logging.getLogger("hypercorn.error")
    config.accesslog = logging.getLogger("hypercorn.access") if settings.log_level == "debug" else None
    config.keep_alive_timeout = settings.limits.idle_timeout
    config.graceful_timeout = settings.drain_timeout
    # Each SSE, NDJSON or held long poll is one HTTP/2 stream: allow as many as a connection
    # may have subscriptions, rather than Hypercorn's default of 100.
    config.h2_max_concurrent_streams = max(100, settings.limits.max_subscriptions_per_connection)
    if certfile is not None:
        config.certfile = str(certfile)
        config.keyfile = str(keyfile) if keyfile is not None else None
    return config


async def serve_http2(
    settings: Settings,
    *,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
) -> None:
    """Serve ``create_app(settings)`` under Hypercorn until ``shutdown_trigger`` returns."""
    config = hypercorn_config(settings, certfile=certfile, keyfile=keyfile)
    _use_our_websocket_stream()
    app = create_app(settings)
    try:
        if shutdown_trigger is None:
            await serve(app, config)
        else:
            await serve(app, config, shutdown_trigger=shutdown_trigger)
    except LifespanFailureError:
        if app.startup_error is None:
            raise
        raise app.startup_error from None  # the reason, without Hypercorn's wrapping


def run_http2(settings: Settings, *, certfile: Path | None = None, keyfile: Path | None = None) -> None:
    """Serve until SIGINT/SIGTERM (``tidings serve --http2``)."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        import uvloop  # here: it is not on every platform (Windows)
    except ImportError:  # pragma: no cover - uvloop is not on Windows
        runner: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(serve_http2(settings, certfile=certfile, keyfile=keyfile))
    except TidingsError as exc:
        # As uvicorn does for the other engines: one line, and its startup-failure status.
        logging.getLogger("hypercorn.error").error("cannot start: %s", exc.message)
        raise SystemExit(3) from None
