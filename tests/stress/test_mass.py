"""Many clients at once: a mass disconnect and resume, and slow consumers among healthy ones."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.stress.chaos_proxy import ChaosProxy
from tests.stress.helpers import (
    Consumer,
    Publisher,
    check_ledger,
    close_all,
    complete,
    node_process,
    served_transports,
    wait_for,
)
from tidings.core.position import Position

SETTINGS = {
    "namespaces": {"mass": {"history_size": 10000, "join_leave": False, "presence": False}},
    "limits": {
        "max_connections_per_ip": 100000,
        "max_connections_per_user": 100000,
        "outbox_bytes": 262144,
        "outbox_messages": 1000,
        "max_message_bytes": 131072,
    },
    "sse": {"heartbeat": 2.0},
}


async def start_consumers(
    url: str, transports: list[str], count: int, channels: list[str], publisher: Publisher
) -> list[Consumer]:
    consumers = []
    for i in range(count):
        channel = channels[i % len(channels)]
        transport = transports[i % len(transports)]
        consumer = Consumer(
            url,
            channel,
            transport,
            Position(publisher.epochs[channel], 1),
            name=f"{transport}#{i}",
            backoff=(0.1, 1.0),
        )
        consumer.start()
        consumers.append(consumer)
        if i % 100 == 99:
            await asyncio.sleep(0)  # let the connects start in batches
    return consumers


# make test cuts 300 clients at once (every served connection-holding transport, 10 channels);
# make test-long the full thousand (two minutes on the loaded CI machine, past the suite's timeout).
@pytest.mark.parametrize(
    "clients",
    [
        pytest.param(300, id="300"),
        pytest.param(1000, id="1000", marks=[pytest.mark.long, pytest.mark.timeout(600)]),
    ],
)
async def test_clients_cut_at_once_resume_from_their_cursors_without_loss(tmp_path: Path, clients: int):
    with node_process(tmp_path, settings=SETTINGS) as node:
        served, _ = await served_transports(node.url)
        transports = [t for t in served if t != "poll"]  # polls hold no connection to cut
        names = [f"mass:m{i}" for i in range(10)]
        publisher = Publisher(node.url)
        consumers: list[Consumer] = []
        async with ChaosProxy(node.port, seed=3, mean_lifetime=0, stall_rate=0, slow_rate=0) as proxy:
            try:
                for name in names:
                    assert await publisher.publish(name, "start")
                consumers = await start_consumers(proxy.url, transports, clients, names, publisher)
                for name in names:
                    assert await publisher.publish(name, "warm-up")
                await wait_for(
                    lambda: all(c.ledger.last_offset() >= 2 for c in consumers),
                    90,
                    f"{clients} consumers to be live",
                )
                await wait_for(lambda: proxy.live >= clients, 30, f"{clients} connections through the proxy")
                started = time.monotonic()
                cut = proxy.cut_all()
                await publisher.steady(names, 10, rate=20)  # while they reconnect
                last = dict(publisher.last)
                await wait_for(
                    lambda: all(complete(c.ledger, last[c.ledger.channel]) for c in consumers),
                    90,
                    "every consumer to resume and catch up",
                )
                caught_up = time.monotonic() - started
            finally:
                await close_all(consumers)
                await publisher.close()
    assert cut >= clients
    problems = [
        p
        for c in consumers
        for p in check_ledger(
            c.ledger, publisher.accepted[c.ledger.channel], (publisher.epochs[c.ledger.channel], 2)
        )
    ]
    assert not problems, problems[:20]
    assert not any(c.ledger.gaps for c in consumers)
    assert caught_up < 90, caught_up


class SlowReader:
    """A client that subscribes and then never reads, with a tiny receive buffer."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.setblocking(False)

    async def open_ws(self, port: int, channel: str) -> None:
        await asyncio.get_running_loop().sock_connect(self.sock, ("127.0.0.1", port))
        # uncompressed: with permessage-deflate the 60 KB blobs of x's are 80 bytes on the wire
        self.ws = await connect(
            f"ws://127.0.0.1:{port}/ws", sock=self.sock, max_queue=1, open_timeout=10, compression=None
        )
        await self.ws.send(json.dumps({"op": "subscribe", "channel": channel}))

    async def open_sse(self, port: int, channel: str) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_connect(self.sock, ("127.0.0.1", port))
        request = (
            f"GET /sse?channel={channel} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
        await loop.sock_sendall(self.sock, request)

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            ws.transport.abort()  # its transport owns the socket
        else:
            self.sock.close()


async def test_slow_consumers_at_1_percent_are_cut_memory_stays_bounded_others_get_everything(tmp_path: Path):
    with node_process(tmp_path, settings=SETTINGS) as node:
        served, _ = await served_transports(node.url)
        publisher = Publisher(node.url)
        assert await publisher.publish("mass:slow", "start")
        consumers = await start_consumers(node.url, ["ws"], 198, ["mass:slow"], publisher)
        slow = [SlowReader(), SlowReader()]
        try:
            await slow[0].open_ws(node.port, "mass:slow")
            if "sse" in served:
                await slow[1].open_sse(node.port, "mass:slow")
            else:
                await slow[1].open_ws(node.port, "mass:slow")
            assert await publisher.publish("mass:slow", "warm-up")
            await wait_for(
                lambda: all(c.ledger.last_offset() >= 2 for c in consumers), 60, "198 consumers to be live"
            )
            rss_before = node.rss_bytes()
            blob = "x" * 60000

            async def connections() -> int:
                async with httpx.AsyncClient(base_url=node.url) as http:
                    info = (await http.get("/api/info")).json()
                return sum(info["connections"].values())

            started = time.monotonic()
            count = await connections()
            for n in range(150):  # at most 9 MB per subscriber; stop once the slow are cut
                assert await publisher.publish("mass:slow", {"n": n, "blob": blob})
                if n % 5 == 4:
                    count = await connections()
                    if count <= 198:
                        break
            published = n + 1
            last = publisher.last["mass:slow"]
            await wait_for(
                lambda: all(complete(c.ledger, last) for c in consumers),
                60,
                "the healthy consumers to get everything",
            )
            elapsed = time.monotonic() - started
            rss_growth = node.rss_bytes() - rss_before
            deadline = time.monotonic() + 20  # a reader that never reads gets 5 s for the close
            while count > 198 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                count = await connections()
        finally:
            for reader in slow:
                reader.close()
            await close_all(consumers)
            await publisher.close()
    problems = [
        p
        for c in consumers
        for p in check_ledger(c.ledger, publisher.accepted["mass:slow"], (publisher.epochs["mass:slow"], 2))
    ]
    assert not problems, problems[:20]
    assert count <= 198, f"the slow readers were not cut: {count} connections"
    # Each slow reader may hold one outbox (256 KiB) plus socket buffers; the healthy 198 were
    # sent 3.2 MB each through their own outboxes. Growth stays far below the 2 x 3.2 MB a
    # server buffering for the slow readers would need on top of its working set.
    assert rss_growth < 48 * 2**20, rss_growth
    assert elapsed < 30, (elapsed, published)
