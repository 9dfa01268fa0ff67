"""Adapter interface: what the driver and the load generator need to know about one peer."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from common import http_request

ENV = os.environ.get("PEERBENCH_ENV", "/tmp/peerbench-env")
PY = os.path.join(ENV, "py", "bin", "python")
NODE_PATH = os.path.join(ENV, "node", "node_modules")
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVERS = os.path.join(HERE, "servers")
HOST = "127.0.0.1"


@dataclass
class Cmd:
    """One server-side process to start (the driver pins it to the server CPUs)."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None


class Peer:
    name = "?"  # registry key, used on the command line
    label = "?"  # what the tables show
    transports = ("ws",)  # subset of ws, sse, stream, lp
    # "raw": the record is somewhere in the frame and the socket is subscribed once it opens;
    # "socketio": Engine.IO v4 / Socket.IO v5 handshake;
    # "tidings": send ws_subscribe() after the upgrade, ready on the {"op":"subscribed"} reply,
    #            the record is searched after the frame's "data" key (a JSON publication)
    ws_flavor = "raw"
    port = 0  # main client port
    publish_port = 0  # where POST publish goes

    def __init__(self, rundir: str):
        self.rundir = rundir  # scratch directory for this run (logs, generated config)

    # --- server side (driver) ---
    def commands(self) -> list[Cmd]:
        raise NotImplementedError

    def ready_ports(self) -> list[int]:
        return [self.port]

    def versions(self) -> dict[str, str]:
        return {}

    def check(self, transport: str, channel: str) -> str | None:
        """Called once the server is up: None if `transport` works, else why not (run is n/a)."""
        return None

    def python_executables(self) -> tuple[str, ...]:
        """Interpreters of this peer's Python servers (--cprofile wraps the commands they run)."""
        return (PY,)

    # --- client side (load generator) ---
    def ws_url(self, channel: str) -> str:
        return f"ws://{HOST}:{self.port}/ws?channel={channel}"

    def sse_path(self, channel: str) -> tuple[str, int, str]:
        return HOST, self.port, f"/sse?channel={channel}"

    def stream_path(self, channel: str) -> tuple[str, int, str]:
        """HTTP streaming (any chunked body holding the records, e.g. NDJSON)."""
        return HOST, self.port, f"/stream?channel={channel}"

    def ws_subscribe(self, channel: str) -> bytes:
        """ws_flavor "tidings": the frame that subscribes after the upgrade."""
        return b""

    def lp_path(self, channel: str) -> tuple[str, int, str]:
        return HOST, self.port, f"/lp?channel={channel}"

    def publish_addr(self) -> tuple[str, int]:
        return HOST, self.publish_port or self.port

    def publish_request(self, channel: str, payload: bytes, transport: str) -> bytes:
        """Raw HTTP/1.1 request bytes that publish `payload` to `channel` (keep-alive)."""
        host, port = self.publish_addr()
        return http_request("POST", host, port, f"/publish?channel={channel}", payload)


def py_env() -> dict[str, str]:
    return {"PYTHONPATH": SERVERS, "PYTHONUNBUFFERED": "1"}


def pip_version(dist: str) -> str:
    from importlib.metadata import version

    try:
        return version(dist)
    except Exception:
        return "?"
