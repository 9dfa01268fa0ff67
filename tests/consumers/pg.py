"""PostgreSQL for the consumer tests: the shared server (127.0.0.1:5432, trust, database ``test``)
with a fresh outbox table per test, and a private server (Debian's ``pg_ctl``) to restart."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

from tests.redis_server import free_port
from tidings.outbox import ddl

PG_URL = os.environ.get("TIDINGS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def unique_table() -> str:
    return f"outbox_{uuid.uuid4().hex[:10]}"


async def create_outbox(url: str, table: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(ddl(table))
    finally:
        await conn.close()


async def drop_outbox(url: str, table: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            f"DROP TABLE IF EXISTS {table}, {table}_dead; DROP FUNCTION IF EXISTS {table}_notify() CASCADE"
        )
    finally:
        await conn.close()


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"no {name} under /usr/lib/postgresql/*/bin")
    return found[-1]


class PrivatePostgres:
    """A PostgreSQL of its own (initdb in a temporary directory, a free port), to stop and start."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tidings-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "log"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_owner(self, *command: str) -> list[str]:
        # PostgreSQL refuses to run as root: as root (a container), run it as the postgres user.
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *command]
        return list(command)

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            self._as_owner(pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log), *args),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def init(self) -> PrivatePostgres:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(
            self._as_owner(
                pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync"
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.dir}'\nfsync = off\nmax_connections = 50\n"
            )
        return self

    def start(self) -> None:
        self._ctl("-w", "-t", "60", "start")

    def stop(self, mode: str = "immediate") -> None:
        self._ctl("-w", "-t", "60", "-m", mode, "stop")

    def restart(self) -> None:
        self.stop()
        time.sleep(0.5)
        self.start()

    def cleanup(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        self.init().start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
