"""tidings itself: ``tidings serve`` from this repository, publishing through ``POST /api/publish``.

Transports: WebSocket ``/ws`` (a ``subscribe`` op after the upgrade: ``ws_flavor = "tidings"``),
SSE ``/sse``, HTTP streaming ``/stream`` (NDJSON) and long polling ``/poll?timeout=25``. Scenarios
whose endpoint answers 404 on this build are recorded as ``n/a`` (see :meth:`Tidings.check`).

The server runs with the interpreter in ``$TIDINGS_PYTHON`` (default: ``<repo>/.venv/bin/python``
if it exists, else ``/work/main/.venv/bin/python``) and ``PYTHONPATH=<repo>/src``, so the code
under test is this checkout's. The run's settings file (``tidings-bench.toml`` in the run's
scratch directory) differs from the defaults only where a benchmark needs it; see ``BENCH_TOML``.

``tidings-before`` and ``tidings-after`` are the same server run from another copy of ``src/``
(``$TIDINGS_BEFORE_SRC``, ``$TIDINGS_AFTER_SRC``, described in the records by
``$TIDINGS_BEFORE_REV``, ``$TIDINGS_AFTER_REV``): ``run.py compare`` exports two git refs and runs
both through the same harness, so that only the server's code differs between them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time

from common import http_request

from .base import HOST, Cmd, Peer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SRC = os.path.join(REPO, "src")


def tidings_python() -> str:
    env = os.environ.get("TIDINGS_PYTHON")
    if env:
        return env
    local = os.path.join(REPO, ".venv", "bin", "python")
    return local if os.path.exists(local) else "/work/main/.venv/bin/python"


# Only what the benchmark needs differs from the defaults:
#  * log_level warning: uvicorn's INFO line per WebSocket connection is not what we measure (the
#    other peers run with quiet logs too);
#  * no presence and no join/leave messages in the default namespace: with them, 1,000
#    subscribers of one channel cost 500k join frames at set-up, and no peer does presence;
#  * connection limits above C1's 10,000 connections from one loopback address;
#  * publisher flow control with a 2 ms lag target, as docs/topics/flow.md advises for
#    clients on the same host or LAN (the default, 10 ms, is for clients across the internet).
# Outbox limits (1 MiB / 10,000 messages per connection) stay at their defaults: a slow consumer
# closed with 4008 shows up as "lost" and "closed_during_run", which is what a user would see.
BENCH_TOML = """\
log_level = "warning"
demo = false

[limits]
max_connections_per_ip = 20000
max_connections_per_user = 20000

[flow]
lag_target = 0.002

[namespaces.default]
presence = false
join_leave = false
"""


class Tidings(Peer):
    name = "tidings"
    label = "tidings (this checkout)"
    transports = ("ws", "sse", "stream", "lp")
    ws_flavor = "tidings"
    port = 18601

    def config_path(self) -> str:
        return os.path.join(self.rundir, "tidings-bench.toml")

    def src(self) -> str:
        """The ``src/`` folder whose ``tidings`` package the server runs."""
        return SRC

    def rev(self) -> str:
        """What the records call that code."""
        return subprocess.run(
            ["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()

    def commands(self) -> list[Cmd]:
        path = self.config_path()
        with open(path, "w") as f:
            f.write(BENCH_TOML)
        env = {"PYTHONPATH": self.src(), "PYTHONUNBUFFERED": "1"}
        argv = [
            tidings_python(),
            "-m",
            "tidings",
            "serve",
            "--port",
            str(self.port),
            "--config",
            path,
        ]
        return [Cmd("tidings", argv, env=env)]

    def python_executables(self) -> tuple[str, ...]:
        return (tidings_python(),)

    # --- client side ---
    def ws_url(self, channel: str) -> str:
        return f"ws://{HOST}:{self.port}/ws"

    def ws_subscribe(self, channel: str) -> bytes:
        return b'{"op":"subscribe","channel":"%s"}' % channel.encode()

    def sse_path(self, channel: str) -> tuple[str, int, str]:
        return HOST, self.port, f"/sse?channel={channel}"

    def stream_path(self, channel: str) -> tuple[str, int, str]:
        return HOST, self.port, f"/stream?channel={channel}"

    def lp_path(self, channel: str) -> tuple[str, int, str]:
        return HOST, self.port, f"/poll?channel={channel}&timeout=25"

    def publish_request(self, channel: str, payload: bytes, transport: str) -> bytes:
        # The record is plain ASCII without quotes or backslashes: it is a JSON string as is.
        body = b'{"channel":"%s","data":"%s"}' % (channel.encode(), payload)
        return http_request("POST", HOST, self.port, "/api/publish", body, "application/json")

    # --- driver side ---
    def check(self, transport: str, channel: str) -> str | None:
        """None if ``transport`` is served; else why not (the scenario is recorded as n/a)."""
        path = {
            "sse": self.sse_path,
            "stream": self.stream_path,
            "lp": self.lp_path,
            "ws": None,
        }.get(transport)
        if path is None:
            return None
        _, _, target = path(channel)
        if transport == "lp":  # answer at once instead of holding the poll
            target = target.replace("timeout=25", "timeout=0")
        head = b""
        for attempt in range(3):
            try:
                with socket.create_connection((HOST, self.port), timeout=5) as s:
                    s.sendall(f"GET {target} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n\r\n".encode())
                    head = s.recv(4096).split(b"\r\n", 1)[0]
                break
            except OSError as exc:
                if attempt == 2:
                    raise RuntimeError(f"checking {transport}: {exc}") from exc
                time.sleep(1)
        parts = head.split(b" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        if status == 404:
            return f"{target.split('?')[0]} not served (404) by this build"
        if not 200 <= status < 300:
            return f"{target.split('?')[0]} answered {status}"
        return None

    def versions(self) -> dict[str, str]:
        py = tidings_python()
        code = (
            "import importlib.metadata as m, tidings\n"
            "print(tidings.__version__)\n"
            "for d in ('uvicorn','uvloop','websockets','starlette','orjson','httptools'):\n"
            "    print(d + ' ' + m.version(d))"
        )
        try:
            out = subprocess.run(
                [py, "-c", code],
                capture_output=True,
                text=True,
                timeout=30,
                env={**os.environ, "PYTHONPATH": self.src()},
            ).stdout.split("\n")
        except (OSError, subprocess.TimeoutExpired):
            return {}
        res = {"tidings": out[0].strip() if out else "?", "commit": self.rev()}
        for line in out[1:]:
            if " " in line:
                k, v = line.split(" ", 1)
                res[k] = v
        return res


class TidingsDefaults(Tidings):
    """``tidings serve`` as it comes: no settings file at all, so the defaults stay measured.

    Everything a user would meet is in: INFO logs, the demo pages, the 10 ms flow target, and
    the limit of 1,000 connections per address (C1's 10,000 connections from one loopback
    address go past it: the refused ones are what a user would see too).
    """

    name = "tidings-defaults"
    label = "tidings (no settings file)"
    port = 18602

    def commands(self) -> list[Cmd]:
        env = {"PYTHONPATH": self.src(), "PYTHONUNBUFFERED": "1"}
        argv = [tidings_python(), "-m", "tidings", "serve", "--port", str(self.port)]
        return [Cmd("tidings-defaults", argv, env=env)]


class TidingsBefore(Tidings):
    """The tuned server from the copy of ``src/`` in ``$TIDINGS_BEFORE_SRC`` (``run.py compare``)."""

    name = "tidings-before"
    label = "tidings before"
    port = 18603
    side = "BEFORE"

    def __init__(self, rundir: str):
        super().__init__(rundir)
        rev = os.environ.get(f"TIDINGS_{self.side}_REV")
        if rev:  # the tables' row label says which code it was
            self.label = f"{self.label}: {rev}"

    def src(self) -> str:
        src = os.environ.get(f"TIDINGS_{self.side}_SRC")
        if not src:
            raise RuntimeError(
                f"{self.name} runs the code of a git ref, named by $TIDINGS_{self.side}_SRC: "
                "use `python benchmarks/run.py compare --before REF`"
            )
        return src

    def rev(self) -> str:
        return os.environ.get(f"TIDINGS_{self.side}_REV") or self.src()


class TidingsAfter(TidingsBefore):
    """The same, from ``$TIDINGS_AFTER_SRC``: the other side of the comparison."""

    name = "tidings-after"
    label = "tidings after"
    port = 18604
    side = "AFTER"
