"""Serve tidings with an echo endpoint for Autobahn: ``python scripts/autobahn_server.py PORT ENGINE``.

ENGINE ``fast`` (the default of ``tidings serve``): the fast server's own framing answers
``/ws-echo`` (``server.debug_echo``). ENGINE ``uvicorn``: everything goes through the ASGI app, and
``/ws-echo`` is :mod:`tidings.server.echo` on the same WebSocket stack as ``/ws`` there. The node is
otherwise an ordinary one (``uvicorn_config`` as ``tidings serve`` uses it); the frame limit is
raised to 64 MiB because Autobahn's case 9 sends messages of up to 16 MiB and echoing them is the
point (``/ws`` keeps its own limit: 1009 above it); case 9.3 sends 4 MiB in 64-byte
fragments, so the frames a message may have are raised too.
"""

from __future__ import annotations

import sys

import uvicorn

from tidings.server.echo import add_echo
from tidings.server.run import uvicorn_config
from tidings.settings import load_settings


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9001
    engine = sys.argv[2] if len(sys.argv) > 2 else "fast"
    settings = load_settings(port=port, log_level="warning",
                             server={"engine": engine, "debug_echo": engine == "fast"},
                             limits={"max_frame_bytes": 64 * 2**20, "max_message_bytes": 64 * 2**20,
                                     "max_message_frames": 2**20,
                                     "idle_timeout": 600, "ping_interval": 600})
    config = uvicorn_config(settings)
    if engine != "fast":
        add_echo(config.app)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
