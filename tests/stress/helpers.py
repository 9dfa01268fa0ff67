"""Helpers for the fault-injection tests: a node in a subprocess, consumers that keep a ledger.

A fault test's one assertion is the ledger check (:func:`check_ledger`): every accepted
publication reached every consumer exactly once and in order, or sits inside a gap notice the
consumer was given. Nothing here sleeps for state: waits poll a condition against a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

import tidings
from tidings.core.events import Gap, Publication
from tidings.core.position import Position

ROOT = Path(__file__).resolve().parents[2]
TRANSPORTS = ("ws", "sse", "stream", "longpoll", "poll")
HTTP_PATHS = {"sse": "/sse", "stream": "/stream", "longpoll": "/poll", "poll": "/poll"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


class NodeProcess:
    """``python -m tidings serve`` in a subprocess, for tests that kill or starve the node.

    Settings go through ``TIDINGS_*`` environment variables (nested sections as JSON).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        broker: str = "memory",
        port: int | None = None,
        settings: dict[str, Any] | None = None,
        preexec: Callable[[], None] | None = None,
    ) -> None:
        self.workdir = workdir
        self.broker = broker
        self.port = port or free_port()
        self.settings = settings or {}
        self.preexec = preexec
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / f"node-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def env(self) -> dict[str, str]:
        # No coverage in the node (make test measures child processes, pyproject's
        # [tool.coverage.run] patch): these nodes are under load and their memory is measured,
        # and coverage's tracing slowed a 1,000-client run past its timeout in CI.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TIDINGS_", "COVERAGE_PROCESS_"))}
        env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
        for key, value in self.settings.items():
            env[f"TIDINGS_{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
        return env

    def start(self, timeout: float = 20) -> None:
        log = self.log.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tidings",
                "serve",
                "--port",
                str(self.port),
                "--broker",
                self.broker,
                "--log-level",
                "warning",
            ],
            cwd=self.workdir,
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=self.preexec,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"node did not start in {timeout} s:\n{self.output()}")
            time.sleep(0.05)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a power cut would."""
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

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


@contextlib.contextmanager
def node_process(workdir: Path, **kwargs: Any) -> Iterator[NodeProcess]:
    node = NodeProcess(workdir, **kwargs)
    node.start()
    try:
        yield node
    finally:
        node.stop()


async def served_transports(url: str) -> tuple[list[str], list[str]]:
    """(served, missing): a transport is missing while its endpoint answers 404."""
    served, missing = ["ws"], []
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        for transport in TRANSPORTS[1:]:
            params = {"channel": "probe", "timeout": "0"}
            if transport == "sse" or transport == "stream":
                async with http.stream("GET", HTTP_PATHS[transport], params=params) as response:
                    status = response.status_code
            else:
                status = (await http.get(HTTP_PATHS[transport], params=params)).status_code
            (missing if status == 404 else served).append(transport)
    return served, missing


# consumers ------------------------------------------------------------------------------------


@dataclass
class Ledger:
    """What one consumer saw: publications and gaps in arrival order."""

    name: str
    channel: str
    transport: str
    items: list[Publication | Gap] = field(default_factory=list)
    error: BaseException | None = None

    @property
    def publications(self) -> list[Publication]:
        return [i for i in self.items if isinstance(i, Publication)]

    @property
    def gaps(self) -> list[Gap]:
        return [i for i in self.items if isinstance(i, Gap)]

    def last_offset(self) -> int:
        pubs = self.publications
        return pubs[-1].offset if pubs else 0


class Consumer:
    """A ``tidings.Client`` reading one channel into a :class:`Ledger`, in a task."""

    def __init__(
        self,
        url: str,
        channel: str,
        transport: str,
        since: Position | None,
        name: str = "",
        **client_options: Any,
    ) -> None:
        options: dict[str, Any] = {
            "backoff": (0.05, 0.5),
            "poll_interval": 0.2,
            "long_poll_timeout": 2.0,
            "heartbeat_timeout": 30.0,
        }
        options.update(client_options)
        self.client = tidings.Client(url, transport=transport, **options)
        self.ledger = Ledger(name or f"{transport}:{channel}", channel, transport)
        self.since = since
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            async for item in self.client.subscribe(self.ledger.channel, since=self.since):
                self.ledger.items.append(item)
        except Exception as exc:
            self.ledger.error = exc

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.close(), 10)


async def close_all(consumers: list[Consumer]) -> None:
    for i in range(0, len(consumers), 100):
        await asyncio.gather(*(c.close() for c in consumers[i : i + 100]))


Key = tuple[str, int]  # (epoch, offset)


def check_ledger(ledger: Ledger, accepted: dict[Key, str], first: Key) -> list[str]:
    """Problems with ``ledger`` given the ``accepted`` publications ((epoch, offset) -> id).

    Every accepted publication from ``first`` on must be delivered exactly once, in offset order
    within its epoch, with the accepted id, unless a gap notice covers it: a gap in the same epoch
    covers ``[requested, available_from)``; a gap into a new epoch covers everything of the old
    epoch after the last publication delivered. Returns [] when all holds.
    """
    problems: list[str] = []
    if ledger.error is not None:
        problems.append(f"{ledger.name}: failed with {ledger.error!r}")
    seen: dict[Key, str] = {}
    covered: set[Key] = set()
    epoch, previous = first[0], first[1] - 1
    epochs_after: dict[str, int] = {}  # an epoch left through a gap: offsets after this are covered
    for item in ledger.items:
        if isinstance(item, Gap):
            if item.epoch != epoch:  # a new epoch: its offsets start again at 1
                epochs_after[epoch] = previous
                epoch, previous = item.epoch, (item.available_from or 1) - 1
                continue
            end = item.available_from if item.available_from is not None else item.requested + 1
            covered.update((item.epoch, o) for o in range(item.requested, end))
            previous = max(previous, end - 1)
            continue
        key = (item.epoch, item.offset)
        if key in seen:
            problems.append(f"{ledger.name}: {key} delivered twice")
        elif item.epoch != epoch:
            problems.append(f"{ledger.name}: {key} in a new epoch without a gap notice")
            epoch, previous = item.epoch, item.offset
        elif item.offset <= previous:
            problems.append(f"{ledger.name}: {key} after offset {previous} (out of order)")
        seen[key] = item.id
        previous = max(previous, item.offset)
    for key, pub_id in sorted(accepted.items()):
        if (key[0] == first[0] and key[1] < first[1]) or key in covered:
            continue
        if key[0] in epochs_after and key[1] > epochs_after[key[0]]:
            continue
        got = seen.get(key)
        if got is None:
            problems.append(f"{ledger.name}: accepted {key} never delivered, no gap")
        elif got != pub_id:
            problems.append(f"{ledger.name}: {key} has id {got}, accepted {pub_id}")
    return problems[:5]


def complete(ledger: Ledger, last: int | Key) -> bool:
    """The consumer has seen ``last`` (or failed, which the check reports)."""
    if isinstance(last, tuple):
        # A gap notice with no ``available_from`` in the awaited epoch says "nothing there yet"
        # (the notice that enters a new epoch comes before its publications), not that ``last``
        # was lost: only a gap whose history starts past ``last`` stands in for it.
        epoch, offset = last
        return ledger.error is not None or any(
            i.epoch == epoch
            and (
                i.offset >= offset
                if isinstance(i, Publication)
                else (i.available_from is not None and i.available_from > offset)
            )
            for i in ledger.items
        )
    return (
        ledger.error is not None
        or ledger.last_offset() >= last
        or any(
            isinstance(i, Gap) and (i.available_from is None or i.available_from > last) for i in ledger.items
        )
    )


class Publisher:
    """Publishes through the server API and records what was accepted (offset -> id) per channel.

    A publish that errors (connection cut, 503) is not accepted, whatever happened to it.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.accepted: dict[str, dict[Key, str]] = {}
        self.last: dict[str, Key] = {}
        self.epochs: dict[str, str] = {}
        self.refused = 0
        self.http = httpx.AsyncClient(base_url=url, timeout=10)

    async def publish(self, channel: str, data: Any) -> bool:
        try:
            response = await self.http.post("/api/publish", json={"channel": channel, "data": data})
        except httpx.HTTPError:
            self.refused += 1
            return False
        return self._record(channel, response)

    async def steady(self, channels: list[str], count: int, rate: float) -> None:
        """Publish ``count`` rounds (one publication per channel each) at ``rate`` rounds/s.

        The rounds run in a thread with a blocking client: a test loop busy with hundreds of
        consumers would otherwise hold each publish back and stretch the run.
        """
        await asyncio.to_thread(self._steady, channels, count, rate)

    def _steady(self, channels: list[str], count: int, rate: float) -> None:
        start = time.monotonic()
        with httpx.Client(base_url=self.url, timeout=10) as http:
            for n in range(count):
                for channel in channels:
                    try:
                        response = http.post("/api/publish", json={"channel": channel, "data": {"n": n}})
                    except httpx.HTTPError:
                        self.refused += 1
                        continue
                    self._record(channel, response)
                delay = start + (n + 1) / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)

    def _record(self, channel: str, response: httpx.Response) -> bool:
        if response.status_code != 200:
            self.refused += 1
            return False
        body = response.json()
        key = (body["epoch"], body["offset"])
        self.accepted.setdefault(channel, {})[key] = body["id"]
        self.epochs.setdefault(channel, body["epoch"])
        self.last[channel] = key
        return True

    async def close(self) -> None:
        await self.http.aclose()


async def gather_bounded(coros: list[Awaitable[Any]], batch: int = 100) -> list[Any]:
    out: list[Any] = []
    for i in range(0, len(coros), batch):
        out.extend(await asyncio.gather(*coros[i : i + batch]))
    return out
