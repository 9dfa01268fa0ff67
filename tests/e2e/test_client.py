"""The Python client against a real server: subscribe, publish, resume, gaps, the sync facade."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

import tidings
from tests.e2e.live import wait_live
from tests.serving import RunningServer, serve
from tidings.client.client import TRANSPORTS
from tidings.core.cursor import encode_token

DEADLINE = 10


async def take(sub: tidings.Subscription, n: int) -> list[object]:
    return [await asyncio.wait_for(sub.__anext__(), DEADLINE) for _ in range(n)]


async def test_ws_client_subscribes_publishes_and_reads_presence_and_history(
    server: RunningServer,
):
    async with tidings.Client(server.url) as client:
        sub = client.subscribe("chat:py")
        first = await client.publish("chat:py", {"n": 1})
        second = await client.publish("chat:py", {"n": 2}, event="said")
        items = await take(sub, 2)
        assert [p.offset for p in items] == [first, second] == [1, 2]  # type: ignore[attr-defined]
        assert items[1].event == "said" and items[1].cursor  # type: ignore[attr-defined]
        assert len(await client.presence("chat:py")) == 1
        assert [p.data for p in await client.history("chat:py")] == [{"n": 1}, {"n": 2}]


async def test_ws_client_resumes_from_a_cursor_and_surfaces_gaps(server: RunningServer):
    async with tidings.AsyncServerAPI(server.url) as api:
        for i in range(1, 4):
            await api.publish("news", i)
        async with tidings.Client(server.url) as client:
            sub = client.subscribe(
                "news", since=tidings.Position((await api.history("news")).position.epoch, 1)
            )
            assert [p.data for p in await take(sub, 2)] == [2, 3]  # type: ignore[attr-defined]
        for i in range(10):
            await api.publish("tiny:t", i)
        epoch = (await api.history("tiny:t")).position.epoch
        async with tidings.Client(server.url) as client:
            sub = client.subscribe("tiny:t", since=tidings.Position(epoch, 2))
            gap, *rest = await take(sub, 4)
            assert isinstance(gap, tidings.Gap)
            assert (gap.requested, gap.available_from) == (3, 8)
            assert [p.offset for p in rest] == [8, 9, 10]  # type: ignore[attr-defined]


async def test_ws_client_reconnects_after_a_slow_consumer_close_without_loss_or_repeats():
    with serve(limits={"outbox_messages": 10}) as server:
        async with (
            tidings.Client(server.url, backoff=(0.01, 0.1)) as client,
            tidings.AsyncServerAPI(server.url) as api,
        ):
            sub = client.subscribe("burst")
            await asyncio.wait_for(client._session().connected.wait(), DEADLINE)
            await asyncio.sleep(0.1)  # let the subscribe reach the server
            # Publish faster than the client's read loop drains: the server cuts it (4008),
            # the client reconnects and resumes from its position.
            await api.broadcast(["burst"] * 50, "x")
            offsets = [p.offset for p in await take(sub, 50)]  # type: ignore[attr-defined]
        assert offsets == list(range(1, 51))


def test_sync_client_and_server_api(server: RunningServer):
    with tidings.ServerAPI(server.url) as api, tidings.SyncClient(server.url) as client:
        items = client.subscribe("sync", limit=2, timeout=DEADLINE)
        assert client.publish("sync", "a") == 1
        api.publish("sync", "b")
        assert [p.data for p in items] == ["a", "b"]  # type: ignore[attr-defined]
        assert [c["name"] for c in api.channels()] == ["sync"]
        with pytest.raises(tidings.exceptions.BadRequest):
            api.publish("bad name", 1)


# Every transport resumes across the same restart, all at once (a node process started twice, not
# ten times). Once, not once per engine: the node is a ``tidings serve`` process on its default
# engine, which the engine fixture (tests/e2e/conftest.py) does not reach.
@pytest.mark.parametrize("engine", ["fast"])
async def test_every_transport_resumes_across_a_server_restart_exactly_once(engine: str, tmp_path):
    from tests.nodes import NodeProcess

    node = NodeProcess(
        broker=f"sqlite:///{tmp_path / 'c.db'}",
        cwd=tmp_path,
        env={"TIDINGS_NAMESPACES__SMALL__HISTORY_SIZE": "5"},
    ).start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            api = await stack.enter_async_context(tidings.AsyncServerAPI(node.url))
            subs = {}
            for transport in TRANSPORTS:
                client = await stack.enter_async_context(
                    tidings.Client(
                        node.url,
                        transport=transport,
                        backoff=(0.05, 0.5),
                        poll_interval=0.05,
                        long_poll_timeout=2,
                    )
                )
                subs[transport] = client.subscribe("restart")
            await wait_live(list(subs.values()), lambda marker: api.publish("restart", marker))
            for i in range(1, 4):
                await api.publish("restart", i)
            seen = {t: [p.data for p in await take(sub, 3)] for t, sub in subs.items()}  # type: ignore[attr-defined]
            node.stop()
            node.start()  # same port, same SQLite file: same epoch, history intact
            for i in range(4, 7):
                await api.publish("restart", i)
            for t, sub in subs.items():
                seen[t] += [p.data for p in await take(sub, 3)]  # type: ignore[attr-defined]
        assert seen == {t: [1, 2, 3, 4, 5, 6] for t in TRANSPORTS}
        # A resume from further back than the history keeps is surfaced as a Gap.
        async with tidings.AsyncServerAPI(node.url) as api:
            first = await api.publish("small:g", 0)
            for i in range(1, 10):
                await api.publish("small:g", i)
        for transport in TRANSPORTS:
            async with tidings.Client(node.url, transport=transport, poll_interval=0.05) as client:
                sub = client.subscribe("small:g", since=tidings.Position(first["epoch"], 1))
                gap = (await take(sub, 1))[0]
                assert isinstance(gap, tidings.Gap) and gap.requested == 2, (transport, gap)
    finally:
        node.stop()


async def test_a_cursor_without_the_subscribed_channel_is_refused_not_read_as_the_present(
    server: RunningServer,
):
    other = tidings.Position("e", 4)
    async with tidings.Client(server.url) as client:
        with pytest.raises(tidings.exceptions.InvalidCursor):
            client.subscribe("mine", since=encode_token("theirs", other))
        assert "mine" not in client.subscriptions
