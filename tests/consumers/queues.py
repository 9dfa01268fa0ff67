"""The three queue servers as tests use them: put messages in, read the dead letters back.

Each :class:`Kit` owns uniquely named resources on the shared servers of the machine (Redis on
6379, NATS JetStream on 4222, RabbitMQ on 5672) or on a server the test started itself, and
removes them in ``cleanup``. ``settings()`` is the ``[consumers.NAME]`` table that consumes them.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import nats
from redis.asyncio import Redis

from tests.redis_server import REDIS_SERVER, free_port, wait_for
from tidings.consumers.amqp import AmqpConsumer

REDIS_URL = os.environ.get("TIDINGS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("TIDINGS_TEST_NATS_URL", "nats://127.0.0.1:4222")
AMQP_URL = os.environ.get("TIDINGS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
NATS_SERVER = shutil.which("nats-server")


def _rabbitmq_server() -> str | None:
    """The ``rabbitmq-server`` script that starts a node as the calling user. Debian's
    /usr/sbin/rabbitmq-server is a wrapper that switches to the rabbitmq user and the system's
    directories: the script behind it, in /usr/lib/rabbitmq/bin, is the one a private node needs."""
    candidates = [
        os.environ.get("TIDINGS_TEST_RABBITMQ_SERVER", ""),
        "/usr/lib/rabbitmq/bin/rabbitmq-server",
        *sorted(glob.glob("/usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin/rabbitmq-server"), reverse=True),
        shutil.which("rabbitmq-server") or "",
    ]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


RABBITMQ_SERVER = _rabbitmq_server()
KINDS = ("redis_stream", "nats_jetstream", "amqp")


def reachable(url: str, default_port: int) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), 1):
            return True
    except OSError:
        return False


def available(kind: str) -> bool:
    return {
        "redis_stream": lambda: reachable(REDIS_URL, 6379),
        "nats_jetstream": lambda: reachable(NATS_URL, 4222),
        "amqp": lambda: reachable(AMQP_URL, 5672),
    }[kind]()


def message(channel: str, data: Any, **extra: Any) -> bytes:
    return json.dumps({"channel": channel, "data": data, **extra}).encode()


class Kit:
    """One source's test resources. ``put`` adds messages in order; ``dead`` reads the dead
    letters as (body, error) pairs."""

    kind: str
    url: str

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:8]

    async def put(self, bodies: list[bytes], ids: list[str] | None = None) -> None:
        raise NotImplementedError

    async def dead(self) -> list[tuple[bytes, str]]:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        raise NotImplementedError

    async def cleanup(self) -> None:
        raise NotImplementedError


class RedisKit(Kit):
    kind = "redis_stream"

    def __init__(self, url: str = REDIS_URL) -> None:
        super().__init__()
        self.url = url
        self.stream = f"test:consumer:{self.tag}"

    async def put(self, bodies: list[bytes], ids: list[str] | None = None) -> None:
        async with Redis.from_url(self.url) as redis:
            for start in range(0, len(bodies), 500):
                async with redis.pipeline(transaction=False) as pipe:
                    for body in bodies[start : start + 500]:
                        pipe.xadd(self.stream, {"payload": body})
                    await pipe.execute()

    async def dead(self) -> list[tuple[bytes, str]]:
        async with Redis.from_url(self.url) as redis:
            entries = await redis.xrange(f"{self.stream}:dead")
        return [(fields[b"payload"], fields[b"error"].decode()) for _, fields in entries]

    def settings(self) -> dict[str, Any]:
        return {"kind": "redis_stream", "url": self.url, "stream": self.stream}

    async def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            async with Redis.from_url(self.url) as redis:
                await redis.delete(self.stream, f"{self.stream}:dead")


class NatsKit(Kit):
    kind = "nats_jetstream"

    def __init__(self, url: str = NATS_URL) -> None:
        super().__init__()
        self.url = url
        self.stream = f"TEST_{self.tag}"
        self.subject = f"test.{self.tag}.events"
        self.durable = f"tidings_{self.tag}"
        self.dead_stream = f"{self.stream}_dead"  # what the consumer creates for dead_letter
        self.dead_subject = f"test_dead.{self.tag}"
        self._created = False

    async def put(self, bodies: list[bytes], ids: list[str] | None = None) -> None:
        nc = await nats.connect(self.url)
        try:
            js = nc.jetstream()
            if not self._created:
                await js.add_stream(name=self.stream, subjects=[f"test.{self.tag}.>"])
                self._created = True
            for start in range(0, len(bodies), 500):
                acks = [js.publish(self.subject, body) for body in bodies[start : start + 500]]
                for ack in acks:  # one at a time: JetStream stores them in this order
                    await ack
        finally:
            await nc.close()

    async def create(self) -> None:
        await self.put([])

    async def dead(self) -> list[tuple[bytes, str]]:
        nc = await nats.connect(self.url)
        try:
            js = nc.jetstream()
            info = await js.stream_info(self.dead_stream)
            out = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                raw = await js.get_msg(self.dead_stream, seq)
                out.append((raw.data or b"", (raw.headers or {}).get("Tidings-Error", "")))
            return out
        finally:
            await nc.close()

    def settings(self) -> dict[str, Any]:
        return {
            "kind": "nats_jetstream",
            "url": self.url,
            "stream": self.stream,
            "subject": self.subject,
            "durable": self.durable,
            "dead_letter": self.dead_subject,
        }

    async def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            nc = await nats.connect(self.url)
            try:
                js = nc.jetstream()
                for stream in (self.stream, self.dead_stream):
                    with contextlib.suppress(Exception):
                        await js.delete_stream(stream)
            finally:
                await nc.close()


class AmqpKit(Kit):
    kind = "amqp"

    def __init__(self, url: str = AMQP_URL) -> None:
        super().__init__()
        self.url = url
        self.queue = f"test.consumer.{self.tag}"

    async def put(self, bodies: list[bytes], ids: list[str] | None = None) -> None:
        connection = await aio_pika.connect(self.url)
        try:
            # Without publisher confirms (one round trip each): the frames go out in order, and
            # the declare after them returns once the broker has taken them all.
            await AmqpConsumer._ensure(connection, self.queue)  # as it is, if it exists
            channel = await connection.channel(publisher_confirms=False)
            for i, body in enumerate(bodies):
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        body,
                        message_id=ids[i] if ids else uuid.uuid4().hex,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=self.queue,
                )
            await channel.declare_queue(self.queue, passive=True)
        finally:
            await connection.close()

    async def dead(self) -> list[tuple[bytes, str]]:
        connection = await aio_pika.connect(self.url)
        out = []
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(f"{self.queue}.dead", durable=True)
            while (got := await queue.get(fail=False, no_ack=False)) is not None:
                out.append((got.body, str((got.headers or {}).get("x-tidings-error", ""))))
            await channel.close()  # unacknowledged: they stay in the queue for a second look
        finally:
            await connection.close()
        return out

    def settings(self) -> dict[str, Any]:
        return {"kind": "amqp", "url": self.url, "queue": self.queue}

    async def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            connection = await aio_pika.connect(self.url)
            try:
                channel = await connection.channel()
                for name in (self.queue, f"{self.queue}.dead"):
                    await channel.queue_delete(name)
            finally:
                await connection.close()


def kit(kind: str, url: str | None = None) -> Kit:
    cls = {"redis_stream": RedisKit, "nats_jetstream": NatsKit, "amqp": AmqpKit}[kind]
    return cls(url) if url else cls()


# servers a test owns (to restart them) ------------------------------------------------------


class DurableRedis:
    """A redis-server on a free port that fsyncs every write (``appendfsync always``), so a
    SIGKILL loses nothing it acknowledged: the source restart of the fault proofs."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tidings-consumer-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> DurableRedis:
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                "--protected-mode", "no", "--logfile", str(self.dir / "redis.log"),
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(lambda: _answers(self.port), 10, f"redis-server on {self.port}")
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class OwnNats:
    """``nats-server -js`` on a free port with its store in a temporary directory."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tidings-consumer-nats-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> OwnNats:
        assert NATS_SERVER is not None
        self.process = subprocess.Popen(
            [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.dir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: _listening(self.port), 10, f"nats-server on {self.port}")
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class OwnRabbit:
    """A RabbitMQ node of its own, never the machine's (a shared service on 5672): its own node
    name, AMQP and distribution ports, and its database, logs, config, plugin list and Erlang
    cookie in a temporary directory (no plugin: no management listener). It registers with the
    machine's epmd, as any Erlang node does (one is started if none runs).

    ``restart`` is a clean stop (SIGTERM: the node flushes its message store) and a start with the
    same node name and directory: a durable queue keeps its persistent messages, and what was
    delivered but not acknowledged is ready again, at its place. Erlang boots in 5-15 s."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dist_port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tidings-consumer-rabbitmq-"))
        self.process: subprocess.Popen[bytes] | None = None
        (self.dir / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq's: its node name and port
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "loopback_users.guest = true\n"  # guest/guest, from loopback only (the default)
            "log.console = false\n"
        )

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def start(self, timeout: float = 90) -> OwnRabbit:
        assert RABBITMQ_SERVER is not None
        d = self.dir
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(d),  # the Erlang cookie is written there
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": f"tidings-test-{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        with open(d / "server.out", "ab") as out:
            # A session of its own: ``stop`` can end the script, the VM and its helpers together.
            self.process = subprocess.Popen(
                [RABBITMQ_SERVER],
                env=env,
                cwd=d,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_for(self._ready, timeout, f"rabbitmq-server on {self.port} (log in {d}/log)")
        except BaseException:
            self._end(force=True)
            raise
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"rabbitmq-server exited with {self.process.returncode}: see {self.dir}/log")
        return _amqp_answers(self.port)

    def _end(self, *, force: bool) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        if not force:
            process.terminate()  # the script asks the VM to stop cleanly, and waits for it
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(60)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def restart(self) -> None:
        """Stop cleanly and start again: same node, same port, same data."""
        self._end(force=False)
        self.start()

    def stop(self) -> None:
        self._end(force=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def _amqp_answers(port: int) -> bool:
    """The broker answers the AMQP 0-9-1 protocol header with connection.start (a method frame)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            sock.settimeout(5)
            return sock.recv(1) == b"\x01"
    except OSError:
        return False


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            return sock.recv(7).startswith(b"INFO")
    except OSError:
        return False


def monotonic_deadline(seconds: float) -> float:
    return time.monotonic() + seconds
