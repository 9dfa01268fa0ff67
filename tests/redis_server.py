"""Real ``redis-server`` processes for tests: on free loopback ports, in temporary directories.

Never touches the Redis on 6379. Everything started here is stopped by ``stop()`` (the fixtures
call it in ``finally``), so a failing test leaves no process behind.

``RedisServer`` can be killed with SIGKILL and restarted on the same port, empty (its dump is
removed) or with what it last saved (``SAVE`` before the kill). ``RedisCluster`` builds a
three-master cluster with ``redis-cli --cluster create``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["RedisCluster", "RedisServer", "free_port", "redis_available", "wait_for"]

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def redis_available() -> bool:
    return os.access(REDIS_SERVER, os.X_OK) and os.access(REDIS_CLI, os.X_OK)


def free_port() -> int:
    """A loopback port that was free a moment ago (and is not Redis's default 6379)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        # Cluster bus ports are port + 10000: keep both in range.
        if port != 6379 and port + 10000 < 65536:
            return port


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; raise TimeoutError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server on 127.0.0.1:<port>, data in its own temporary directory."""

    def __init__(
        self, port: int | None = None, *, cluster: bool = False, directory: Path | None = None
    ) -> None:
        self.port = port if port is not None else free_port()
        self.cluster = cluster
        self._own_dir = directory is None
        self.dir = directory if directory is not None else Path(tempfile.mkdtemp(prefix="tidings-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        args = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--logfile",
            str(self.dir / "redis.log"),
            "--dbfilename",
            "dump.rdb",
        ]
        if self.cluster:
            args += [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ]
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_for(lambda: _answers(self.port), timeout, f"redis-server on {self.port}")
        except BaseException:
            self.stop()
            raise
        return self

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [REDIS_CLI, "-p", str(self.port), *args], capture_output=True, timeout=10, check=True
        )
        return done.stdout.decode()

    def kill(self) -> None:
        """SIGKILL: no shutdown save, connections reset, as in a crash."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def restart(self, *, keep_data: bool = False) -> None:
        """Start again on the same port; empty unless ``keep_data`` (what was SAVEd last)."""
        self.kill()
        if not keep_data:
            (self.dir / "dump.rdb").unlink(missing_ok=True)
        self.start()

    def stop(self) -> None:
        self.kill()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisCluster:
    """Three masters, no replicas, each a :class:`RedisServer` with ``cluster-enabled``."""

    def __init__(self, masters: int = 3) -> None:
        self.nodes = [RedisServer(cluster=True) for _ in range(masters)]

    @property
    def url(self) -> str:
        return f"redis-cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self, timeout: float = 20.0) -> RedisCluster:
        try:
            for node in self.nodes:
                node.start()
            subprocess.run(
                [
                    REDIS_CLI,
                    "--cluster",
                    "create",
                    *[f"127.0.0.1:{n.port}" for n in self.nodes],
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                capture_output=True,
                timeout=timeout,
                check=True,
            )
            wait_for(self._healthy, timeout, "cluster_state:ok on every node")
        except BaseException:
            self.stop()
            raise
        return self

    def _healthy(self) -> bool:
        try:
            return all("cluster_state:ok" in n.cli("cluster", "info") for n in self.nodes)
        except subprocess.SubprocessError:
            return False

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
