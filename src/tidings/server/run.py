"""Running a node under uvicorn (``tidings serve``), with a graceful shutdown.

On SIGTERM (or SIGINT) :class:`TidingsServer` shuts down in this order, all within
``settings.drain_timeout`` seconds:

1. the node starts draining: ``/readyz`` answers 503, new clients are sent away (1012/503);
2. the listening sockets close (no new connections);
3. every client is told to come back (:meth:`~tidings.node.Node.drain`: WebSocket close 1012
   with a reconnect reason, SSE/stream notices and end, held long polls answered) and the node
   waits for them to go, then for its drain hooks (webhook attempts in flight);
4. uvicorn's own shutdown closes whatever is left and runs the lifespan shutdown, which stops
   the node and closes (flushes) the broker.

Uvicorn alone would close WebSockets with a bare 1012 and only then stop the node; draining
first lets every transport say goodbye in its own way and keeps ``/readyz`` honest meanwhile.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
from pathlib import Path
from typing import Any, cast

import uvicorn

from tidings.engines.sockets.protocol import FastProtocol
from tidings.engines.uvicorn_internals import protocol_path, ws_protocol_path
from tidings.logs import configure_logging
from tidings.node import Node
from tidings.server.app import create_app
from tidings.settings import Settings

__all__ = ["TidingsServer", "run", "uvicorn_config"]

log = logging.getLogger("tidings.server")


def uvicorn_config(
    settings: Settings, *, certfile: Path | None = None, keyfile: Path | None = None
) -> uvicorn.Config:
    """uvicorn's config for ``settings``. With ``server.engine = "fast"`` (the default) uvicorn
    runs :class:`~tidings.engines.sockets.protocol.FastProtocol`, which serves ``/ws`` on sockets it
    owns and hands every other request to :func:`~tidings.engines.uvicorn_internals.protocol_path`'s
    protocol (the ASGI app); with ``"uvicorn"`` everything goes through the ASGI app."""
    limits = settings.limits
    http: Any = protocol_path()
    if settings.server.engine == "fast":
        http = FastProtocol
    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=http,
        ws=ws_protocol_path(),
        ws_max_size=limits.max_frame_bytes,
        ws_ping_interval=limits.ping_interval,
        ws_ping_timeout=limits.idle_timeout,
        ws_per_message_deflate=False,
        lifespan="on",
        log_level=settings.log_level,
        log_config=None,  # tidings.logs.configure_logging owns the handlers
        access_log=False,  # tidings.logs.RequestIdMiddleware writes access lines
        timeout_keep_alive=int(limits.handshake_timeout),
        timeout_graceful_shutdown=int(settings.drain_timeout) or None,
        ssl_certfile=str(certfile) if certfile else None,
        ssl_keyfile=str(keyfile) if keyfile else None,
        server_header=False,
        proxy_headers=False,  # tidings.auth.proxy reads X-Forwarded-For from trusted proxies
    )


class TidingsServer(uvicorn.Server):
    """A uvicorn server that drains its node before uvicorn closes the connections."""

    @property
    def node(self) -> Node | None:
        node = getattr(self.config.app, "node", None)
        return node if isinstance(node, Node) else None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # Everything built at startup (the app, its routes and models, settings) lives as long
        # as the process: frozen, the collector stops walking it on every full collection,
        # which under load was a tenth of the server's CPU (perf, long polling).
        gc.collect()
        gc.freeze()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        node = self.node
        if node is None or self.force_exit:
            await super().shutdown(sockets)
            return
        loop = asyncio.get_running_loop()
        budget = node.settings.drain_timeout
        started = loop.time()
        node.draining = True
        for server in self.servers:
            server.close()
        log.info("shutting down: draining %d connections (up to %.1fs)", len(node.connections), budget)
        finished = await node.drain(budget)
        left = max(0.0, budget - (loop.time() - started))
        # uvicorn waits for the remaining request tasks at most this long, then cancels them
        self.config.timeout_graceful_shutdown = cast(int, max(0.1, left)) if budget else None
        await super().shutdown(sockets)
        log.info("drained %s in %.2fs", "cleanly" if finished else "with timeout", loop.time() - started)


def run(settings: Settings, *, certfile: Path | None = None, keyfile: Path | None = None) -> None:
    """Serve until SIGINT/SIGTERM, then drain (see the module docstring)."""
    configure_logging(settings)
    TidingsServer(uvicorn_config(settings, certfile=certfile, keyfile=keyfile)).run()
