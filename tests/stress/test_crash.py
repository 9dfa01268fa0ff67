"""Crashes: a node SIGKILLed on SQLite, Redis SIGKILLed under a node, a full or read-only disk.

Consumers on every served transport resume from a known position; the ledger check then holds
each of them to: every accepted publication exactly once and in order, or inside a gap notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.stress.helpers import (
    Consumer,
    NodeProcess,
    Publisher,
    check_ledger,
    close_all,
    complete,
    served_transports,
    wait_for,
)
from tidings.core.position import Position

SETTINGS = {"namespaces": {"crash": {"history_size": 10000, "join_leave": False, "presence": False}}}
CHANNELS = [f"crash:c{i}" for i in range(4)]


def sqlite_available() -> bool:
    try:
        import tidings.brokers.sqlite  # noqa: F401
    except ImportError:
        return False
    return True


def redis_available() -> bool:
    try:
        import tidings.brokers.redis  # noqa: F401
        from tests.redis_server import redis_available as server_available
    except ImportError:
        return False
    return server_available()


async def start_consumers(
    url: str, publisher: Publisher, per_transport: int, only: tuple[str, ...] | None = None
) -> list[Consumer]:
    served, _ = await served_transports(url)
    served = [t for t in served if only is None or t in only]
    consumers = []
    for i in range(per_transport * len(served)):
        channel = CHANNELS[i % len(CHANNELS)]
        transport = served[i % len(served)]
        consumer = Consumer(
            url,
            channel,
            transport,
            Position(publisher.epochs[channel], 1),
            name=f"{transport}#{i}",
            backoff=(0.05, 0.5),
        )
        consumer.start()
        consumers.append(consumer)
    return consumers


def problems_of(consumers: list[Consumer], publisher: Publisher) -> list[str]:
    return [
        p
        for c in consumers
        for p in check_ledger(
            c.ledger, publisher.accepted[c.ledger.channel], (publisher.epochs[c.ledger.channel], 2)
        )
    ]


async def converge(consumers: list[Consumer], publisher: Publisher, timeout: float = 60) -> None:
    last = dict(publisher.last)
    await wait_for(
        lambda: all(complete(c.ledger, last[c.ledger.channel]) for c in consumers),
        timeout,
        "every consumer to reach the last accepted publication",
    )


@pytest.mark.skipif(not sqlite_available(), reason="the SQLite broker is not in this tree yet")
async def test_a_node_sigkilled_and_restarted_on_sqlite_loses_nothing(tmp_path: Path):
    node = NodeProcess(tmp_path, broker=f"sqlite:///{tmp_path / 'tidings.db'}", settings=SETTINGS)
    node.start()
    publisher = Publisher(node.url)
    consumers: list[Consumer] = []
    try:
        for channel in CHANNELS:
            assert await publisher.publish(channel, "start")
        consumers = await start_consumers(node.url, publisher, per_transport=8)
        killer = asyncio.get_running_loop().create_task(publisher.steady(CHANNELS, 30, rate=20))
        await wait_for(lambda: len(publisher.accepted[CHANNELS[0]]) >= 10, 30, "publications")
        node.kill()  # mid-stream, with publishes in flight
        refused_before = publisher.refused
        await asyncio.to_thread(node.start)
        await killer
        await publisher.steady(CHANNELS, 10, rate=20)
        assert publisher.refused > refused_before or publisher.refused >= 0
        await converge(consumers, publisher)
        async with httpx.AsyncClient(base_url=node.url) as http:  # the history kept all of it
            for channel in CHANNELS:
                body = (await http.get(f"/api/channels/{channel}/history", params={"limit": 1000})).json()
                stored = {(p["epoch"], p["offset"]): p["id"] for p in body["publications"]}
                assert publisher.accepted[channel].items() <= stored.items()
    finally:
        await close_all(consumers)
        await publisher.close()
        node.stop()
    assert not problems_of(consumers, publisher), problems_of(consumers, publisher)[:20]
    assert not any(c.ledger.gaps for c in consumers)  # durable: the epoch survived the crash


# The polling half once failed intermittently: a poll that subscribed after Redis came back
# received the node's catch-up gap notice (meant for subscribers live during the outage) and
# skipped a publication. Catch-up notices now go only to subscribers live before the reconnect
# (Hub.control, before_generation). It failed again, about one run in ten under load: a poll
# whose read reached the restarted Redis before the Pub/Sub link did was told of the new epoch
# twice (its own Gap, then the link's notice, read as a loss of offsets 12 on of the new epoch);
# a subscriber's generation is now the one its read began in, bumped when the link goes down
# (tests/brokers/test_redis.py has the deterministic case).


@pytest.mark.redis
@pytest.mark.skipif(not redis_available(), reason="the Redis broker or redis-server is missing")
@pytest.mark.parametrize(
    "transports",
    [
        pytest.param(("ws", "sse", "stream"), id="streams"),
        pytest.param(("longpoll", "poll"), id="polls"),
    ],
)
async def test_redis_sigkilled_and_restarted_empty_every_loss_is_reported_as_a_gap(
    tmp_path: Path, transports: tuple[str, ...]
):
    from tests.redis_server import RedisServer

    with RedisServer() as redis:
        node = NodeProcess(tmp_path, broker=redis.url, settings=SETTINGS)
        node.start()
        publisher = Publisher(node.url)
        consumers: list[Consumer] = []
        try:
            for channel in CHANNELS:
                assert await publisher.publish(channel, "start")
            consumers = await start_consumers(node.url, publisher, per_transport=8, only=transports)
            await publisher.steady(CHANNELS, 10, rate=20)
            await converge(consumers, publisher)
            redis.kill()
            for channel in CHANNELS:  # refused while Redis is down: 503, nothing accepted
                assert not await publisher.publish(channel, "during the outage")
            redis.restart()  # empty: the history is gone, so the epochs change
            await wait_for_publish(publisher, CHANNELS[0])
            await publisher.steady(CHANNELS, 10, rate=20)
            await converge(consumers, publisher)
        finally:
            await close_all(consumers)
            await publisher.close()
            node.stop()
    assert not problems_of(consumers, publisher), problems_of(consumers, publisher)[:20]
    for consumer in consumers:  # every consumer was told about the new epoch
        assert consumer.ledger.gaps, consumer.ledger.name


async def wait_for_publish(publisher: Publisher, channel: str, timeout: float = 30) -> None:
    """Publish ``channel`` until it is accepted (the node reconnecting to its store)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await publisher.publish(channel, "probe"):
        assert loop.time() < deadline, "the node never took a publication again"
        await asyncio.sleep(0.1)


# full and read-only disks ----------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(tmp_path: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted under ``tmp_path`` (needs root and CAP_SYS_ADMIN)."""
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    if (
        shutil.which("mount") is None
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a small tmpfs here (needs root and CAP_SYS_ADMIN)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(disk: Path) -> Path:
    """Fill ``disk`` to the last byte; returns the filler file (delete it to free the space)."""
    filler = disk / "filler"
    with filler.open("wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    return filler


@pytest.mark.skipif(not sqlite_available(), reason="the SQLite broker is not in this tree yet")
async def test_sqlite_on_a_full_disk_answers_503_and_loses_nothing_accepted(tmp_path: Path):
    with small_disk(tmp_path) as disk:
        node = NodeProcess(tmp_path, broker=f"sqlite:///{disk / 'tidings.db'}", settings=SETTINGS)
        node.start()
        publisher = Publisher(node.url)
        consumers: list[Consumer] = []
        try:
            for channel in CHANNELS:
                assert await publisher.publish(channel, "start")
            consumers = await start_consumers(node.url, publisher, per_transport=4)
            await publisher.steady(CHANNELS, 5, rate=50)
            filler = fill(disk)
            statuses = set()
            blob = "x" * 4096
            async with httpx.AsyncClient(base_url=node.url) as http:
                for _ in range(200):  # until the disk refuses (journal pages may still fit)
                    response = await http.post("/api/publish", json={"channel": CHANNELS[0], "data": blob})
                    statuses.add(response.status_code)
                    if response.status_code == 200:
                        body = response.json()
                        publisher.accepted[CHANNELS[0]][(body["epoch"], body["offset"])] = body["id"]
                        publisher.last[CHANNELS[0]] = (body["epoch"], body["offset"])
                    else:
                        assert response.status_code == 503, response.text
                        assert response.json()["error"]["code"] == "unavailable"
                        break
                assert 503 in statuses, f"a full disk never refused a publish: {statuses}"
                assert (await http.get("/healthz")).status_code == 200  # the node lives on
            filler.unlink()  # space again: publishing resumes
            await wait_for_publish(publisher, CHANNELS[0])
            await publisher.steady(CHANNELS, 5, rate=50)
            await converge(consumers, publisher)
        finally:
            await close_all(consumers)
            await publisher.close()
            node.stop()
    assert not problems_of(consumers, publisher), problems_of(consumers, publisher)[:20]
    assert not any(c.ledger.gaps for c in consumers)


@pytest.mark.skipif(not sqlite_available(), reason="the SQLite broker is not in this tree yet")
async def test_sqlite_on_a_read_only_disk_refuses_to_start_and_loses_nothing_accepted(tmp_path: Path):
    """A disk cannot be remounted read-only under a running node (the kernel answers "busy" while
    SQLite holds its files open for writing), so the node is stopped, the disk turned read-only
    and the node started again: it must refuse to start, saying why, not serve a store it cannot
    write. Made writable again, it resumes with everything it had accepted."""
    with small_disk(tmp_path, "16m") as disk:
        node = NodeProcess(tmp_path, broker=f"sqlite:///{disk / 'tidings.db'}", settings=SETTINGS)
        node.start()
        publisher = Publisher(node.url)
        consumers: list[Consumer] = []
        try:
            for channel in CHANNELS:
                assert await publisher.publish(channel, "start")
            consumers = await start_consumers(node.url, publisher, per_transport=4)
            await publisher.steady(CHANNELS, 5, rate=50)
            node.stop()
            remount = await asyncio.to_thread(
                subprocess.run, ["mount", "-o", "remount,ro", str(disk)], capture_output=True
            )
            if remount.returncode != 0:
                pytest.skip(f"cannot remount read-only: {remount.stderr.decode().strip()}")
            with pytest.raises(RuntimeError, match="cannot open"):
                node.start(timeout=30)
            assert not await publisher.publish(CHANNELS[0], "while read-only")
            await asyncio.to_thread(
                subprocess.run, ["mount", "-o", "remount,rw", str(disk)], check=True, capture_output=True
            )
            node.start()
            await publisher.steady(CHANNELS, 5, rate=50)
            await converge(consumers, publisher)
        finally:
            await close_all(consumers)
            await publisher.close()
            node.stop()
    assert not problems_of(consumers, publisher), problems_of(consumers, publisher)[:20]
    assert not any(c.ledger.gaps for c in consumers)
