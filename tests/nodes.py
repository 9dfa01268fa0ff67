"""``tidings serve`` as a real subprocess on a free port, for multi-node and crash tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.redis_server import free_port


class NodeProcess:
    def __init__(
        self,
        *,
        broker: str,
        port: int | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.broker = broker
        self.port = port or free_port()
        self.env = env or {}
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self, timeout: float = 20) -> NodeProcess:
        return self.spawn().wait_ready(timeout)

    def spawn(self) -> NodeProcess:
        """Start the process without waiting for it (:func:`start_all` starts several at once)."""
        env = {**os.environ, "TIDINGS_LOG_LEVEL": "warning", **self.env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tidings", "serve", "--port", str(self.port), "--broker", self.broker],
            env=env,
            cwd=self.cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        return self

    def wait_ready(self, timeout: float = 20) -> NodeProcess:
        assert self.proc is not None, "spawn() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"node exited: {self.proc.stderr.read().decode()[-2000:]}"
                    if self.proc.stderr
                    else "node exited"
                )
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("node did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_all(nodes: list[NodeProcess], timeout: float = 60) -> list[NodeProcess]:
    """Start the nodes side by side, then wait until each answers: a node's start is mostly its
    interpreter importing, which several do at once (a multi-node test waited for each in turn).
    The deadline is for all of them, so it is longer than one node's."""
    for node in nodes:
        node.spawn()
    for node in nodes:
        node.wait_ready(timeout)
    return nodes
