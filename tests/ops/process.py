"""``tidings serve`` as a real child process, for the tests that send it signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
START_DEADLINE = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)


def environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without TIDINGS_ variables, with this checkout's source first."""
    found = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    found["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [found.get("PYTHONPATH")])])
    found.update(env or {})
    return found


def serve_failing(
    *args: str, cwd: Path | None = None, timeout: float = START_DEADLINE
) -> subprocess.CompletedProcess[str]:
    """Run ``tidings serve ARGS`` expecting it to exit on its own (a start that fails)."""
    return subprocess.run(
        [sys.executable, "-m", "tidings", "serve", *args],
        env=environment(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start(config: Path, port: int, log: Path, env: dict[str, str] | None = None) -> ServerProcess:
    """Start ``tidings serve`` and wait until ``/readyz`` answers 200."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tidings", "serve", "--config", str(config), "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment(env),
        )
    server = ServerProcess(process, port, log)
    deadline = time.monotonic() + START_DEADLINE
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"tidings serve exited: {server.output()}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"tidings serve did not become ready: {server.output()}")
        time.sleep(0.05)


@contextmanager
def running(config: Path, port: int, log: Path, env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    """A started server, killed at the end of the block if it is still running."""
    server = start(config, port, log, env)
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(10)
