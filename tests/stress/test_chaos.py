"""Zero loss through a chaos proxy: connections cut, stalled and slowed at random.

Every consumer resumes from a known position (the channel's first publication), so what it must
see is exact: every accepted publication after that, once each, in order (or inside a gap notice).
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.stress.chaos_proxy import ChaosProxy
from tests.stress.helpers import (
    TRANSPORTS,
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

SEED = int(os.environ.get("TIDINGS_CHAOS_SEED", "20261128"))
SETTINGS = {
    "namespaces": {"chaos": {"history_size": 10000, "join_leave": False, "presence": False}},
    "limits": {"max_connections_per_ip": 100000, "max_connections_per_user": 100000},
    "sse": {"heartbeat": 1.0},
}


def describe(consumer: Consumer) -> str:
    """A stuck consumer, for the failure message."""
    client = consumer.client
    session = client._ws
    task = session.task if session is not None else None
    sub = client.subscriptions.get(consumer.ledger.channel)
    http_task = sub.task if sub is not None else None
    dead = next((t for t in (task, http_task) if t is not None and t.done()), None)
    why = repr(dead.exception()) if dead is not None and not dead.cancelled() else "alive"
    return f"{consumer.ledger.name} at {consumer.ledger.last_offset()} ({why})"


async def run_chaos(
    url: str, transports: list[str], clients: int, channels: int, rounds: int, rate: float, seed: int
) -> tuple[list[str], dict[str, object]]:
    names = [f"chaos:c{i}" for i in range(channels)]
    publisher = Publisher(url)
    consumers: list[Consumer] = []
    async with ChaosProxy(
        int(url.rsplit(":", 1)[1]),
        seed=seed,
        mean_lifetime=1.5,
        stall_rate=0.03,
        max_stall=0.4,
        slow_rate=0.03,
    ) as proxy:
        try:
            for name in names:  # a known first position for every consumer to resume from
                assert await publisher.publish(name, "start")
            for i in range(clients):
                channel = names[i % channels]
                transport = transports[i % len(transports)]
                consumer = Consumer(
                    proxy.url,
                    channel,
                    transport,
                    Position(publisher.epochs[channel], 1),
                    name=f"{transport}#{i}",
                )
                consumer.start()
                consumers.append(consumer)
            # Faults must meet a live run: starting 200 clients can hold this loop for seconds
            # (each builds its HTTP client), longer than the publishing takes on a slow host.
            await wait_for(
                lambda: proxy.stats.connections >= clients, 60, "every consumer to connect through the proxy"
            )
            await publisher.steady(names, rounds, rate)
            proxy.calm()
            last = dict(publisher.last)
            try:
                await wait_for(
                    lambda: all(complete(c.ledger, last[c.ledger.channel]) for c in consumers),
                    60,
                    "every consumer to reach the last accepted offset",
                )
            except AssertionError as exc:
                stuck = [describe(c) for c in consumers if not complete(c.ledger, last[c.ledger.channel])]
                raise AssertionError(f"{exc}; {len(stuck)} stuck: {stuck[:5]}") from None
        finally:
            proxy.calm()
            await close_all(consumers)
            await publisher.close()
    problems = [
        p
        for c in consumers
        for p in check_ledger(
            c.ledger, publisher.accepted[c.ledger.channel], (publisher.epochs[c.ledger.channel], 2)
        )
    ]
    stats = {
        "cuts": proxy.stats.cuts,
        "stalls": proxy.stats.stalls,
        "slowdowns": proxy.stats.slowdowns,
        "connections": proxy.stats.connections,
        "accepted": sum(len(a) for a in publisher.accepted.values()),
        "refused": publisher.refused,
        "gaps": sum(len(c.ledger.gaps) for c in consumers),
    }
    return problems, stats


async def test_200_clients_on_all_five_transports_lose_nothing_through_a_chaos_proxy(tmp_path: Path):
    with node_process(tmp_path, settings=SETTINGS) as node:
        _, missing = await served_transports(node.url)
        assert not missing, f"transports not served (404): {', '.join(missing)}"
        problems, stats = await run_chaos(
            node.url, list(TRANSPORTS), clients=200, channels=10, rounds=40, rate=5, seed=SEED
        )
    assert not problems, (problems[:20], stats)
    assert stats["accepted"] == 10 + 40 * 10, stats  # every publish was taken (not via the proxy)
    assert stats["cuts"] and stats["stalls"] and stats["slowdowns"], stats  # faults did happen
    assert stats["gaps"] == 0, stats  # history covers the whole run: nothing may be skipped


async def test_websocket_clients_lose_nothing_through_a_chaos_proxy(tmp_path: Path):
    with node_process(tmp_path, settings=SETTINGS) as node:
        problems, stats = await run_chaos(
            node.url, ["ws"], clients=100, channels=5, rounds=40, rate=8, seed=SEED + 1
        )
    assert not problems, (problems[:20], stats)
    assert stats["cuts"] and stats["stalls"] and stats["slowdowns"], stats
    assert stats["gaps"] == 0, stats


async def test_the_chaos_proxy_is_transparent_when_calm(tmp_path: Path):
    with node_process(tmp_path, settings=SETTINGS) as node:
        async with ChaosProxy(node.port, seed=1) as proxy:
            proxy.calm()
            publisher = Publisher(node.url)
            consumer = Consumer(proxy.url, "chaos:calm", "ws", None)
            consumer.start()
            await wait_for(
                lambda: (
                    consumer.client.subscriptions.get("chaos:calm") is not None
                    and consumer.client.subscriptions["chaos:calm"].latest is not None
                ),
                10,
                "the subscription to go live",
            )
            for n in range(20):
                assert await publisher.publish("chaos:calm", n)
            await wait_for(lambda: consumer.ledger.last_offset() == 20, 10, "20 publications")
            await consumer.close()
            await publisher.close()
            assert proxy.stats.cuts == 0
            assert [p.data for p in consumer.ledger.publications] == list(range(20))
