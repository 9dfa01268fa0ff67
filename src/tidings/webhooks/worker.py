"""The dispatcher process: outbound deliveries off the publishers' core.

With ``webhooks.dispatcher = "process"`` (the default under ``tidings serve``) the node only
commits each message with the endpoints that take it (its group commit) and returns; a child
process, ``python -m tidings.webhooks.worker``, owns the :class:`~.dispatcher.Dispatcher`: the
HTTP pools, the lanes, retries and rate limits. Both open the same queue — the SQLite file (WAL:
the child only reads, :class:`~.store.SQLiteWebhookStore` ``companion=True``; the node stays the
file's one writer and commits the attempt records the child sends it, so that a publisher's
commit never waits for the child's) or the Redis queue (the child writes its records itself and
shares its node's lease token, so what the node's ``enqueue`` holds is the child's).

The queue is the truth; the pipes only say where to look:

- node → child (the child's stdin, JSON lines): ``{"d": [[delivery_id, endpoint_id, seq,
  due_at, attempts, message], …], "m": [[id, channel, event, body, created_at], …], "r":
  replayed}`` new deliveries (``message``: an index into ``m``, which carries each message
  once, so that the child's first attempt need not read it; or null), sent once their rows are
  visible to the child's connection; ``{"e": 1}`` the endpoints changed (the child reloads them from the
  store before it reads the next line, so a delivery sent after a rotation is signed with the new
  secret); ``{"stop": seconds}`` finish the attempts in flight and exit.
- child → node (its stdout, JSON lines): ``{"a": [record, …]}`` attempt records (SQLite queue;
  gathered for ``RECORD_INTERVAL``), and ``{"c": {outcome: count}, "q": queued, "e": changed}``
  every ``REPORT_INTERVAL`` while something changed: the attempt counts since the last report
  (the node adds them to its metrics), the queue depth (``tidings_webhook_queue_depth``), and
  whether an attempt changed an endpoint (failing, disabled: the node reloads its endpoints).

At start the child loads every pending delivery from the store (the SQLite queue: and ignores
the notices of deliveries already in that snapshot; Redis: it claims what is free, and a dead
child's leases end as a dead node's do), so nothing a dead child held is lost.

Lifetime: the child dies with its node — ``PR_SET_PDEATHSIG`` (Linux) kills it when the node
dies, SIGKILL included, and end-of-file on its stdin stops it otherwise; it ignores SIGINT and
SIGTERM (a terminal's Ctrl-C or a service manager signals the whole group: the node drains and
then stops it). The node restarts a child that died alone (:class:`DispatcherProcess`). The
child lowers its CPU priority by ``webhooks.dispatcher_nice`` so that publishing keeps its rate
when the cores are short; deliveries then catch up between bursts.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import uvloop

from tidings.logs import configure_logging
from tidings.settings import Settings
from tidings.webhooks.dispatcher import Dispatcher, Sender
from tidings.webhooks.redis_store import RedisWebhookStore
from tidings.webhooks.retry import RetryPolicy
from tidings.webhooks.ssrf import parse_networks
from tidings.webhooks.store import (
    Attempt,
    AttemptRecord,
    DeliveryStatus,
    Due,
    Endpoint,
    Message,
    SQLiteWebhookStore,
    _endpoint_doc,
)

__all__ = ["DispatcherProcess", "main"]

log = logging.getLogger("tidings.webhooks")

STALE_WAIT = 0.005  # seconds without a line before stale endpoints are read again
REPORT_INTERVAL = 0.1  # seconds between two reports of the child (while something changed)
LINE_LIMIT = 1 << 28  # bytes of one line either way (a notice or a report is one line)
INLINE_BODY = 65536  # bytes of a message body sent in a notice at most (else: read from the store)
RECORDS_PER_LINE = 256  # attempt records sent at once at most
RESTART_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)  # before restarting a child that died alone
PR_SET_PDEATHSIG = 1
# Seconds the child gathers attempt records before it sends them to the node: fewer lines for
# the node to read, and commits that carry more rows each (a commit writes every page it
# dirtied, however few rows). Nothing waits for a record in the child.
RECORD_INTERVAL = 0.05


# the node's side ---------------------------------------------------------------------------------


class DispatcherProcess:
    """The node's handle on its dispatcher process (see the module docstring).

    ``config`` is what the child needs (see :func:`child_config`); ``on_counts(outcome, n)`` and
    ``on_endpoints()`` receive the child's reports; ``caught_up`` waits until the deliveries
    enqueued so far are visible to another connection of the store."""

    def __init__(
        self,
        config: dict[str, Any],
        *,
        caught_up: Callable[[], Any],
        on_counts: Callable[[str, int], None],
        on_endpoints: Callable[[], None],
        on_records: Callable[[list[AttemptRecord]], Any] | None = None,
    ) -> None:
        self.config = config
        self.on_records = on_records
        self.caught_up = caught_up
        self.on_counts = on_counts
        self.on_endpoints = on_endpoints
        self.proc: asyncio.subprocess.Process | None = None
        self.depth = 0
        self.restarts = 0
        self.stopping = False
        self._watcher: asyncio.Task[None] | None = None
        self._outbox: list[Due] = []
        self._sender: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        """Start the child; not waiting for it to load: the node serves meanwhile, and what it
        enqueues waits in the pipe (and the store)."""
        await self._spawn()
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def ready(self) -> None:
        """Return once the current child has loaded the queue (tests)."""
        await self._ready.wait()

    async def _spawn(self) -> None:
        self._ready.clear()
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tidings.webhooks.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=LINE_LIMIT,
        )
        self._write({**self.config, "ppid": os.getpid()})

    async def _watch(self) -> None:
        """Read the child's reports; when it dies alone, start another (its pending deliveries
        are in the store: the new child loads them)."""
        failures = 0
        while True:
            proc = self.proc
            assert proc is not None and proc.stdout is not None
            started = time.monotonic()
            while line := await proc.stdout.readline():
                self._report(orjson.loads(line))
            code = await proc.wait()
            if self.stopping:
                return
            failures = 0 if time.monotonic() - started > 60 else failures + 1
            delay = RESTART_DELAYS[min(failures, len(RESTART_DELAYS) - 1)]
            log.error("the webhook dispatcher process exited (%s); restarting it in %.1f s", code, delay)
            await asyncio.sleep(delay)
            if self.stopping:
                return
            try:
                await self._spawn()
            except OSError as exc:
                log.error("could not start the webhook dispatcher process: %s", exc)
                continue
            self.restarts += 1

    def _report(self, report: dict[str, Any]) -> None:
        if "a" in report and self.on_records is not None:
            self._record([_record_from(row) for row in report["a"]])
        if report.get("ready"):
            self._ready.set()
        for outcome, count in report.get("c", {}).items():
            self.on_counts(outcome, count)
        self.depth = report.get("q", self.depth)
        if report.get("e"):
            self.on_endpoints()

    def _record(self, records: list[AttemptRecord]) -> None:
        assert self.on_records is not None
        future = self.on_records(records)
        future.add_done_callback(_log_unrecorded)

    def _write(self, message: dict[str, Any]) -> None:
        proc = self.proc
        if proc is None or proc.stdin is None or proc.returncode is not None:
            return  # a dead child's successor loads the queue from the store
        with contextlib.suppress(ConnectionError, RuntimeError):
            proc.stdin.write(orjson.dumps(message) + b"\n")

    def deliveries(self, dues: Sequence[Due], *, replayed: bool = False) -> None:
        """Tell the child of new deliveries (sent once their rows are visible to it)."""
        if replayed:  # written by their own commit (store.replay returned): visible now
            self._write({**_due_rows(dues), "r": True})
            return
        self._outbox.extend(dues)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        while self._outbox:
            batch, self._outbox = self._outbox, []
            try:
                await self.caught_up()  # the delivery rows of every due in batch are written
            except Exception:
                log.warning("webhook queue not caught up; telling the dispatcher process anyway")
            self._write(_due_rows(batch))

    def endpoints_changed(self) -> None:
        self._write({"e": 1})

    def queued(self) -> int:
        return self.depth

    async def drain(self, seconds: float) -> None:
        """Let the child finish its attempts in flight (within ``seconds``) and exit."""
        self.stopping = True
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        if self._sender is not None and not self._sender.done():
            with contextlib.suppress(Exception):
                await self._sender
        self._write({"stop": seconds})
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds + 1):
                await proc.wait()

    async def stop(self) -> None:
        self.stopping = True
        proc = self.proc
        if proc is not None and proc.returncode is None:
            await self.drain(10.0)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if proc is not None and proc.stdin is not None:
            proc.stdin.close()
        if self._watcher is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                async with asyncio.timeout(5):
                    await self._watcher
            self._watcher.cancel()


def _log_unrecorded(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("webhook attempts not recorded (they will be made again): %s", future.exception())


def _record_row(record: AttemptRecord) -> list[Any]:
    delivery_id, a, status, next_at, endpoint = record
    attempt = [a.at, a.status, a.duration_ms, a.error, a.response, a.outcome]
    return [delivery_id, attempt, status, next_at, None if endpoint is None else list(endpoint)]


def _record_from(row: list[Any]) -> AttemptRecord:
    delivery_id, attempt, status, next_at, endpoint = row
    return (delivery_id, Attempt(*attempt), status, next_at, None if endpoint is None else tuple(endpoint))


def _due_rows(dues: Sequence[Due]) -> dict[str, Any]:
    messages: dict[str, int] = {}
    rows: list[list[Any]] = []
    for due in dues:
        index = None
        if due.message is not None and len(due.message.body) <= INLINE_BODY:
            index = messages.setdefault(due.message.id, len(messages))
        rows.append([due.delivery_id, due.endpoint_id, due.seq, due.due_at, due.attempts, index])
    bodies: list[Any] = [None] * len(messages)
    for due in dues:
        m = due.message
        if m is not None and m.id in messages and bodies[messages[m.id]] is None:
            # a body is JSON the node encoded (orjson): UTF-8
            bodies[messages[m.id]] = [m.id, m.channel, m.event, m.body.decode(), m.created_at]
    return {"d": rows, "m": bodies}


def child_config(settings: Settings, *, path: str | None, token: str | None) -> dict[str, Any]:
    """What the child is told at start: the node's settings and where its queue is (``path``:
    the SQLite file; ``token``: the Redis store's lease token)."""
    return {"settings": settings.model_dump(mode="json"), "path": path, "token": token}


# the child -----------------------------------------------------------------------------------------


def _die_with_parent(ppid: int) -> None:
    """Be killed when the node dies (SIGKILL included): Linux's parent-death signal."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != ppid:  # the node died before the signal was asked for
        os._exit(0)


class _Companion(SQLiteWebhookStore):
    """The child's SQLite store: it reads the queue, and sends its attempt records to the node,
    the file's one writer (see :class:`~.store.SQLiteWebhookStore`). A record is sent in order
    with the others (a retry's next record cannot overtake it); one the node had not committed
    when it died is an attempt made again, as after any crash."""

    def __init__(self, path: str, send: Callable[[AttemptRecord], None], *, synchronous: str) -> None:
        super().__init__(path, synchronous=synchronous, companion=True)
        self.send = send

    async def record_attempt(
        self,
        delivery_id: str,
        attempt: Attempt,
        status: DeliveryStatus,
        next_attempt_at: float | None,
        endpoint: Endpoint | None,
    ) -> None:
        changed = None if endpoint is None else (endpoint.id, _endpoint_doc(endpoint))
        self.send((delivery_id, attempt, status, next_attempt_at, changed))


class _Child:
    def __init__(self, config: dict[str, Any], out: asyncio.WriteTransport) -> None:
        settings = Settings.model_validate(config["settings"])
        self.settings = settings.webhooks
        self.out = out
        if config["path"] is not None:
            self.store: SQLiteWebhookStore | RedisWebhookStore = _Companion(
                config["path"], self._send_record, synchronous=self.settings.synchronous
            )
        else:
            self.store = RedisWebhookStore(settings.broker, lease=self.settings.lease, token=config["token"])
        self.endpoints: dict[str, Endpoint] = {}
        self.records: list[list[Any]] = []  # to send to the node at the end of this loop turn
        self.counts: dict[str, int] = {}
        self.endpoint_changed = False
        self.reported_depth = -1
        self.watermark = 0  # SQLite: deliveries up to this seq were in the snapshot loaded at start
        sender = Sender(
            timeout=self.settings.timeout,
            allowed=parse_networks(self.settings.allow_private),
            response_cap=self.settings.response_cap,
            ca_file=self.settings.ca_file,
        )
        self.dispatcher = Dispatcher(
            self.store,
            self.endpoints,
            policy=RetryPolicy(
                schedule=tuple(self.settings.retry_schedule),
                jitter=self.settings.jitter,
                throttle_floor=self.settings.throttle_floor,
                retry_after_max=self.settings.retry_after_max,
                disable_after=self.settings.disable_after,
            ),
            sender=sender,
            concurrency=self.settings.concurrency_per_endpoint,
            on_attempt=self._count,
            poll_interval=min(self.settings.poll_interval, self.settings.lease / 3),
            refresh=self.refresh,
            on_endpoint=self._endpoint,
        )

    def _send_record(self, record: AttemptRecord) -> None:
        if not self.records:
            asyncio.get_running_loop().call_later(RECORD_INTERVAL, self._flush_records)
        self.records.append(_record_row(record))
        if len(self.records) >= RECORDS_PER_LINE:
            self._flush_records()  # the timer set for these finds none, or the next ones

    def _flush_records(self) -> None:
        records, self.records = self.records, []
        if records:
            self.out.write(orjson.dumps({"a": records}) + b"\n")

    def _count(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1

    def _endpoint(self, endpoint: Endpoint) -> None:
        self.endpoint_changed = True

    async def refresh(self) -> None:
        stored = {e.id: e for e in await self.store.list_endpoints()}
        for endpoint_id in [i for i in self.endpoints if i not in stored]:
            del self.endpoints[endpoint_id]
            self.dispatcher.endpoint_changed(endpoint_id)
        for endpoint_id, endpoint in stored.items():
            if self.endpoints.get(endpoint_id) != endpoint:
                self.endpoints[endpoint_id] = endpoint
                self.dispatcher.endpoint_changed(endpoint_id)

    def report(self, **extra: Any) -> None:
        depth = self.dispatcher.queued()
        if not (self.counts or self.endpoint_changed or extra or depth != self.reported_depth):
            return
        message: dict[str, Any] = {"c": self.counts, "q": depth, "e": self.endpoint_changed, **extra}
        self.counts, self.endpoint_changed, self.reported_depth = {}, False, depth
        self.out.write(orjson.dumps(message) + b"\n")

    async def reporting(self) -> None:
        while True:
            await asyncio.sleep(REPORT_INTERVAL)
            self.report()

    async def run(self, commands: asyncio.StreamReader) -> None:
        await self.store.open()
        try:
            await self.refresh()
            if isinstance(self.store, SQLiteWebhookStore):
                self.watermark = await self.store.max_seq()  # before the snapshot: see add()
            await self.dispatcher.start()
            self.report(ready=1)
            reporter = asyncio.get_running_loop().create_task(self.reporting())
            try:
                await self.serve(commands)
            finally:
                reporter.cancel()
        finally:
            await self.dispatcher.stop()
            await self.store.close()
            if self.records:
                self._flush_records()
            self.report()

    async def serve(self, commands: asyncio.StreamReader) -> None:
        # Endpoint notices are coalesced: each one marks the endpoints stale, and they are read
        # again once, before the next deliveries or when the node has nothing more to say for a
        # moment. One reload per notice made 1,000 endpoints created in a row cost 1,000 reads of
        # them all (8 s behind the next message).
        stale = False
        while True:
            if stale:
                try:  # a cancelled readline consumes nothing: the line stays for the next read
                    line = await asyncio.wait_for(commands.readline(), STALE_WAIT)
                except TimeoutError:
                    await self.refresh()
                    stale = False
                    continue
            else:
                line = await commands.readline()
            if not line:
                return
            command = orjson.loads(line)
            if "e" in command:
                stale = True
                continue
            if stale:
                await self.refresh()  # before what follows: it uses the new endpoints
                stale = False
            if "d" in command:
                replayed = bool(command.get("r"))
                messages = [Message(m[0], m[1], m[2], m[3].encode(), m[4]) for m in command.get("m", ())]
                for delivery_id, endpoint_id, seq, due_at, attempts, index in command["d"]:
                    if replayed or seq > self.watermark:  # else: loaded at start already
                        message = None if index is None else messages[index]
                        self.dispatcher.add(Due(delivery_id, endpoint_id, seq, due_at, attempts, message))
            elif "stop" in command:
                await self.dispatcher.wait_idle(float(command["stop"]))
                return


async def _child_main() -> None:
    loop = asyncio.get_running_loop()
    commands = asyncio.StreamReader(limit=LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
    config = orjson.loads(await commands.readline())
    _die_with_parent(int(config["ppid"]))
    settings = Settings.model_validate(config["settings"])
    configure_logging(settings)  # the node's: its format, level and redaction of secrets
    with contextlib.suppress(OSError):
        os.nice(settings.webhooks.dispatcher_nice)
    transport, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(_REPORTS, "wb"))
    child = _Child(config, transport)
    try:
        await child.run(commands)
    finally:
        transport.close()


_REPORTS = -1


def main() -> None:
    """The child's entry point (``python -m tidings.webhooks.worker``)."""
    global _REPORTS
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node decides when this process stops
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # The reports go to the node through the stdout this process was started with; anything
    # else that writes to stdout (a library, a stray print) goes to stderr instead.
    _REPORTS = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    uvloop.run(_child_main())


if __name__ == "__main__":
    main()
