"""A TCP chaos proxy for fault-injection tests: asyncio, loopback only, seeded, bounded.

It sits between clients and a server and, while ``chaos`` is on, at random:

- **cuts** connections (both sides aborted, as a dead network or a killed middlebox would), after
  a random lifetime drawn from an exponential distribution, whether or not data is flowing;
- **stalls** one direction of a connection for a while (up to ``max_stall`` seconds);
- **slows** one direction down: a chunk is trickled through in small pieces.

Everything random comes from one ``random.Random(seed)`` so a failing run can be replayed with its
seed. ``calm()`` turns chaos off (live connections are left alone from then on), so a test can
inject faults for a bounded time and then wait for its clients to converge. ``cut_all()`` drops
every live connection at once. Bounds: every delay is capped, a trickle is at most ``max_trickle``
pieces, and :meth:`close` ends every task the proxy started.

Usage::

    async with ChaosProxy(upstream_port, seed=7) as proxy:
        url = f"http://127.0.0.1:{proxy.port}"
        ...            # clients connect to url
        proxy.calm()
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field

__all__ = ["ChaosProxy", "ChaosStats"]

LOOPBACK = "127.0.0.1"
CHUNK = 65536


@dataclass
class ChaosStats:
    connections: int = 0
    cuts: int = 0
    stalls: int = 0
    slowdowns: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    refused: int = 0
    live: int = 0
    notes: list[str] = field(default_factory=list)


class _Link:
    """One proxied connection: the client's streams, the server's streams, two pumps."""

    def __init__(
        self,
        proxy: ChaosProxy,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        rng: random.Random,
    ) -> None:
        self.proxy = proxy
        self.client_reader, self.client_writer = client
        self.server_reader, self.server_writer = server
        self.rng = rng
        self.closed = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.tasks = [
            loop.create_task(self._pump(self.client_reader, self.server_writer, up=True)),
            loop.create_task(self._pump(self.server_reader, self.client_writer, up=False)),
            loop.create_task(self._reaper()),
        ]

    def cut(self) -> None:
        """Abort both sides at once (RST where the kernel sends one), as a dead network would."""
        if self.closed.is_set():
            return
        self.closed.set()
        for writer in (self.client_writer, self.server_writer):
            writer.transport.abort()

    def _finish(self) -> None:
        """A side ended normally: close both sides gently."""
        if self.closed.is_set():
            return
        self.closed.set()
        for writer in (self.client_writer, self.server_writer):
            with contextlib.suppress(Exception):
                writer.close()

    async def _reaper(self) -> None:
        """Cut the link after a random lifetime, while chaos is on."""
        proxy = self.proxy
        if proxy.mean_lifetime <= 0:
            return
        lifetime = min(self.rng.expovariate(1 / proxy.mean_lifetime), 4 * proxy.mean_lifetime)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closed.wait(), lifetime)
            return
        if proxy.chaos and not self.closed.is_set():
            proxy.stats.cuts += 1
            self.cut()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool) -> None:
        proxy = self.proxy
        rng = self.rng
        try:
            while not self.closed.is_set():
                data = await reader.read(CHUNK)
                if not data:
                    break
                if up:
                    proxy.stats.bytes_up += len(data)
                else:
                    proxy.stats.bytes_down += len(data)
                if proxy.chaos:
                    roll = rng.random()
                    if roll < proxy.stall_rate:
                        proxy.stats.stalls += 1
                        await asyncio.sleep(rng.uniform(0, proxy.max_stall))
                    elif roll < proxy.stall_rate + proxy.slow_rate and len(data) > 1:
                        proxy.stats.slowdowns += 1
                        await self._trickle(writer, data)
                        continue
                if self.closed.is_set():
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._finish()

    async def _trickle(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        proxy = self.proxy
        pieces = max(2, min(proxy.max_trickle, len(data)))
        step = -(-len(data) // pieces)
        for start in range(0, len(data), step):
            if self.closed.is_set():
                return
            writer.write(data[start : start + step])
            await writer.drain()
            await asyncio.sleep(self.rng.uniform(0, proxy.max_trickle_delay))


class ChaosProxy:
    """See the module docstring. ``port`` is known once started (``async with`` or ``start()``)."""

    def __init__(
        self,
        upstream_port: int,
        *,
        seed: int = 0,
        mean_lifetime: float = 2.0,
        stall_rate: float = 0.03,
        max_stall: float = 0.5,
        slow_rate: float = 0.03,
        max_trickle: int = 16,
        max_trickle_delay: float = 0.005,
    ) -> None:
        self.upstream_port = upstream_port
        self.seed = seed
        self.mean_lifetime = mean_lifetime
        self.stall_rate = stall_rate
        self.max_stall = max_stall
        self.slow_rate = slow_rate
        self.max_trickle = max_trickle
        self.max_trickle_delay = max_trickle_delay
        self.chaos = True
        self.stats = ChaosStats()
        self.port = 0
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._accepting: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, LOOPBACK, 0, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]

    async def __aenter__(self) -> ChaosProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def calm(self) -> None:
        """Stop injecting faults; connections alive now are left alone."""
        self.chaos = False

    def storm(self) -> None:
        """Inject faults again (new connections get a random lifetime)."""
        self.chaos = True

    def cut_all(self) -> int:
        """Abort every live connection at once; returns how many."""
        links = [link for link in self._links if not link.closed.is_set()]
        for link in links:
            link.cut()
        self.stats.cuts += len(links)
        return len(links)

    @property
    def live(self) -> int:
        return sum(1 for link in self._links if not link.closed.is_set())

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._accepting.add(task)
        try:
            upstream = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, self.upstream_port), 10)
        except (OSError, TimeoutError):
            self.stats.refused += 1
            writer.transport.abort()
            return
        finally:
            self._accepting.discard(task)
        self.stats.connections += 1
        link = _Link(self, (reader, writer), upstream, random.Random(self._rng.random()))
        self._links.add(link)
        link.start()

        def forget(_: object, link: _Link = link) -> None:
            if all(t.done() for t in link.tasks[:2]):
                self._links.discard(link)

        for t in link.tasks[:2]:
            t.add_done_callback(forget)

    async def close(self) -> None:
        """Stop listening, cut every connection and end every task the proxy started."""
        if self._server is not None:
            self._server.close()
        for task in list(self._accepting):
            task.cancel()
        links = list(self._links)
        for link in links:
            link.cut()
        tasks = [t for link in links for t in link.tasks]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        self._links.clear()
