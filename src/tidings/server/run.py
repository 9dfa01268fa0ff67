"""Running a node under uvicorn (``tidings serve``)."""

from __future__ import annotations

import logging
from pathlib import Path

import uvicorn

from tidings.server.app import create_app
from tidings.server.protocols import protocol_path, ws_protocol_path
from tidings.settings import Settings

__all__ = ["run", "uvicorn_config"]


def uvicorn_config(settings: Settings, *, certfile: Path | None = None,
                   keyfile: Path | None = None) -> uvicorn.Config:
    limits = settings.limits
    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=protocol_path(),
        ws=ws_protocol_path(),
        ws_max_size=limits.max_frame_bytes,
        ws_ping_interval=limits.ping_interval,
        ws_ping_timeout=limits.idle_timeout,
        ws_per_message_deflate=False,
        lifespan="on",
        log_level=settings.log_level,
        access_log=settings.log_level == "debug",
        timeout_keep_alive=int(limits.handshake_timeout),
        timeout_graceful_shutdown=int(settings.drain_timeout) or None,
        ssl_certfile=str(certfile) if certfile else None,
        ssl_keyfile=str(keyfile) if keyfile else None,
        server_header=False,
        proxy_headers=False,
    )


def run(settings: Settings, *, certfile: Path | None = None, keyfile: Path | None = None) -> None:
    """Serve until SIGINT/SIGTERM."""
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.Server(uvicorn_config(settings, certfile=certfile, keyfile=keyfile)).run()
