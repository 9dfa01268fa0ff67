"""One behaviour suite for every broker (the contract in ``tidings.brokers.base``).

A test module subclasses :class:`BrokerConformance` and provides a ``broker_factory`` fixture: a
zero-argument callable that returns a new, not yet started broker. Brokers made by one factory
within one test share their backing store (same file, same Redis), like nodes of one cluster;
each test starts on an empty store. Time is driven by ``now_ms`` arguments, not by sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tidings.brokers.base import Broker
from tidings.core.events import Gap, Page, Publication
from tidings.core.permissions import NamespaceOptions
from tidings.core.position import Position
from tidings.core.presence import ClientInfo
from tidings.core.recovery import Recovered
from tidings.core.wire.frames import EncodedPublication
from tidings.node import Node
from tidings.presence.base import PresenceManager
from tidings.presence.memory import MemoryPresence

__all__ = ["BrokerConformance", "BrokerFactory", "Recorder", "publish", "wait_until"]

BrokerFactory = Callable[[], Broker]

OPTIONS = NamespaceOptions(history_size=100, history_ttl=3600)
T0 = 1_700_000_000_000


class Recorder:
    """A BrokerHandler that records what it is given, in order."""

    def __init__(self) -> None:
        self.publications: list[Publication] = []
        self.controls: list[tuple[str, dict[str, Any]]] = []
        self.states: list[bool] = []

    def on_publication(self, publication: Publication) -> None:
        self.publications.append(publication)

    def on_control(self, channel: str, message: dict[str, Any]) -> None:
        self.controls.append((channel, message))

    def on_broker_state(self, available: bool) -> None:
        self.states.append(available)

    def offsets(self, channel: str) -> list[int]:
        return [p.offset for p in self.publications if p.channel == channel]


class ResumingSubscriber:
    """A hub subscriber that records the offsets it is sent: recovered, then live."""

    def __init__(self) -> None:
        self.offsets: list[int] = []

    def ready(self, result: Recovered) -> None:
        self.offsets.extend(p.offset for p in result.publications)

    def deliver(self, publication: EncodedPublication) -> None:
        self.offsets.append(publication.publication.offset)

    def control(self, channel: str, message: dict[str, Any]) -> None:
        pass


async def wait_until(condition: Callable[[], bool], within: float = 5.0, what: str = "condition") -> None:
    """Poll ``condition`` on the loop until it holds; fail the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.005)


async def publish(
    broker: Broker,
    channel: str,
    data: Any = None,
    *,
    at: int = T0,
    options: NamespaceOptions = OPTIONS,
    key: str | None = None,
    event: str = "message",
    pid: str | None = None,
) -> Publication:
    result = await broker.publish(
        channel,
        data,
        event=event,
        options=options,
        idempotency_key=key,
        publication_id=pid or f"id-{time.time_ns()}",
        now_ms=at,
    )
    return result.publication


class BrokerConformance:
    """The suite. See the module docstring for what a subclass provides.

    ``multi_node``: brokers from one factory are nodes sharing one store (Redis), so a
    publication on one reaches the handlers of the others.
    """

    multi_node = True

    @pytest.fixture
    async def started(self, broker_factory: BrokerFactory) -> AsyncIterator[Callable[[], Any]]:
        """An async callable that starts another broker on the same store (closed at the end)."""
        opened: list[Broker] = []

        async def start() -> tuple[Broker, Recorder]:
            broker = broker_factory()
            recorder = Recorder()
            await broker.start(recorder)
            opened.append(broker)
            return broker, recorder

        yield start
        for broker in reversed(opened):
            await broker.close()

    @pytest.fixture
    async def node(self, started: Callable[[], Any]) -> tuple[Broker, Recorder]:
        pair: tuple[Broker, Recorder] = await started()
        return pair

    @pytest.fixture
    def broker(self, node: tuple[Broker, Recorder]) -> Broker:
        return node[0]

    @pytest.fixture
    def recorder(self, node: tuple[Broker, Recorder]) -> Recorder:
        return node[1]

    @pytest.fixture
    async def presence(self, broker: Broker) -> AsyncIterator[PresenceManager]:
        factory = getattr(broker, "presence_manager", None)
        manager: PresenceManager = factory() if factory is not None else MemoryPresence()
        yield manager
        await manager.close()

    # positions and offsets -------------------------------------------------------------------

    async def test_position_of_an_unknown_channel_is_offset_zero(self, broker: Broker) -> None:
        position = await broker.position("nobody:here")
        assert position.offset == 0
        assert position.epoch

    async def test_first_publication_gets_offset_one_in_the_epoch_reported_before(
        self, broker: Broker
    ) -> None:
        before = await broker.position("first")
        publication = await publish(broker, "first", {"n": 1})
        assert (publication.offset, publication.epoch) == (1, before.epoch)
        assert await broker.position("first") == Position(before.epoch, 1)

    async def test_concurrent_publishers_get_gap_free_offsets(self, broker: Broker) -> None:
        results = await asyncio.gather(*[publish(broker, "busy", i) for i in range(60)])
        assert sorted(p.offset for p in results) == list(range(1, 61))
        assert len({p.epoch for p in results}) == 1
        assert (await broker.position("busy")).offset == 60

    async def test_publication_round_trips_its_fields_and_data(self, broker: Broker) -> None:
        data = {"text": "héllo ✓", "list": [1, 2.5, None, True], "nested": {"a": {"b": []}}}
        sent = await publish(broker, "rt", data, event="chat.message", pid="abc123", at=T0 + 7)
        page = await broker.since("rt", Position(sent.epoch, 0), 10, OPTIONS, T0 + 8)
        assert isinstance(page, Page)
        assert page.publications == [sent]
        assert sent.time == T0 + 7
        assert sent.id == "abc123"
        assert sent.event == "chat.message"

    async def test_data_may_be_any_json_value(self, broker: Broker) -> None:
        values: list[Any] = [None, 0, "s", [1], {"k": None}, 3.25, False]
        for value in values:
            await publish(broker, "any", value)
        pubs, _ = await broker.latest("any", 10, OPTIONS, T0)
        assert [p.data for p in pubs] == values

    # delivery ----------------------------------------------------------------------------------

    async def test_handler_receives_each_publication_exactly_once_in_offset_order(
        self, broker: Broker, recorder: Recorder
    ) -> None:
        await broker.subscribe("live")
        await asyncio.gather(*[publish(broker, "live", i) for i in range(50)])
        await wait_until(lambda: len(recorder.offsets("live")) >= 50, what="50 deliveries")
        await publish(broker, "live", "last")
        await wait_until(lambda: len(recorder.offsets("live")) >= 51, what="the last delivery")
        assert recorder.offsets("live") == list(range(1, 52))

    async def test_publications_reach_every_node_subscribed_to_the_channel(
        self, started: Callable[[], Any]
    ) -> None:
        if not self.multi_node:
            pytest.skip("this broker serves one process")
        first, first_seen = await started()
        second, second_seen = await started()
        await first.subscribe("shared")
        await second.subscribe("shared")
        for i in range(5):
            await publish(first, "shared", i)
        await wait_until(lambda: len(second_seen.offsets("shared")) == 5, what="second node")
        await wait_until(lambda: len(first_seen.offsets("shared")) == 5, what="first node")
        assert second_seen.offsets("shared") == [1, 2, 3, 4, 5]

    async def test_a_node_resuming_while_another_publishes_gets_each_publication_once(
        self, broker_factory: BrokerFactory, started: Callable[[], Any]
    ) -> None:
        """The node's merge of history and live (tidings.core.recovery) over this broker: a
        subscriber resumes after offset 1 while a burst is published (from another node when
        the broker has several), many times; it gets offsets 2..7 once each, in order."""
        node = Node(broker=broker_factory())
        await node.start()
        try:
            publisher = (await started())[0] if self.multi_node else node.broker
            now = int(time.time() * 1000)  # the node reads history at the real time
            for attempt in range(30):
                channel = f"race:{attempt}"
                first = await publish(publisher, channel, 0, at=now)
                sink = ResumingSubscriber()
                burst = asyncio.gather(*(publish(publisher, channel, i, at=now) for i in range(5)))
                await node.subscribe(sink, channel, first.position, sink.ready)
                await burst
                await publish(publisher, channel, "last", at=now)
                await wait_until(lambda s=sink: 7 in s.offsets, what=f"offset 7 on {channel}")
                assert sink.offsets == [2, 3, 4, 5, 6, 7], (attempt, sink.offsets)
                await node.unsubscribe(sink, channel)
        finally:
            await node.stop()

    async def test_control_messages_reach_the_handler(self, broker: Broker, recorder: Recorder) -> None:
        await broker.subscribe("room")
        message = {"op": "join", "channel": "room", "client": {"client": "c1", "user": "u"}}
        await broker.publish_control("room", message)
        await wait_until(lambda: bool(recorder.controls), what="the control message")
        assert recorder.controls == [("room", message)]
        assert recorder.publications == []

    # history ---------------------------------------------------------------------------------

    async def test_history_keeps_only_the_last_size_publications(self, broker: Broker) -> None:
        options = NamespaceOptions(history_size=3, history_ttl=3600)
        for i in range(10):
            await publish(broker, "small", i, options=options)
        pubs, position = await broker.latest("small", 10, options, T0)
        assert [p.offset for p in pubs] == [8, 9, 10]
        assert position.offset == 10

    async def test_history_drops_publications_older_than_the_ttl(self, broker: Broker) -> None:
        options = NamespaceOptions(history_size=100, history_ttl=1)
        for i, at in enumerate([T0, T0 + 400, T0 + 1200, T0 + 1900]):
            await publish(broker, "brief", i, at=at, options=options)
        pubs, position = await broker.latest("brief", 10, options, T0 + 2000)
        assert [p.offset for p in pubs] == [3, 4]
        assert position.offset == 4
        answer = await broker.since("brief", Position(position.epoch, 1), 10, options, T0 + 2000)
        assert isinstance(answer, Gap)
        assert (answer.requested, answer.available_from) == (2, 3)

    async def test_history_size_zero_keeps_nothing_but_still_counts_and_delivers(
        self, broker: Broker, recorder: Recorder
    ) -> None:
        options = NamespaceOptions(history_size=0, history_ttl=0)
        await broker.subscribe("nohist")
        for i in range(3):
            await publish(broker, "nohist", i, options=options)
        pubs, position = await broker.latest("nohist", 10, options, T0)
        assert pubs == []
        assert position.offset == 3
        await wait_until(lambda: len(recorder.offsets("nohist")) == 3, what="deliveries")

    async def test_latest_returns_the_last_n_in_offset_order_with_the_position(self, broker: Broker) -> None:
        for i in range(6):
            await publish(broker, "tail", i)
        pubs, position = await broker.latest("tail", 4, OPTIONS, T0)
        assert [p.offset for p in pubs] == [3, 4, 5, 6]
        assert position.offset == 6
        assert all(p.epoch == position.epoch for p in pubs)
        assert (await broker.latest("tail", 0, OPTIONS, T0))[0] == []

    async def test_latest_of_an_unknown_channel_is_empty_at_offset_zero(self, broker: Broker) -> None:
        pubs, position = await broker.latest("void", 5, OPTIONS, T0)
        assert pubs == []
        assert position.offset == 0

    # since -------------------------------------------------------------------------------------

    async def test_since_returns_the_page_after_the_offset_in_order(self, broker: Broker) -> None:
        for i in range(5):
            await publish(broker, "pages", i)
        epoch = (await broker.position("pages")).epoch
        page = await broker.since("pages", Position(epoch, 2), 10, OPTIONS, T0)
        assert isinstance(page, Page)
        assert [p.offset for p in page.publications] == [3, 4, 5]
        assert page.position == Position(epoch, 5)
        assert not page.more

    async def test_since_pages_by_limit_and_says_there_is_more(self, broker: Broker) -> None:
        for i in range(7):
            await publish(broker, "paged", i)
        epoch = (await broker.position("paged")).epoch
        first = await broker.since("paged", Position(epoch, 0), 3, OPTIONS, T0)
        assert isinstance(first, Page)
        assert first.more
        assert [p.offset for p in first.publications] == [1, 2, 3]
        last = await broker.since("paged", Position(epoch, 6), 3, OPTIONS, T0)
        assert isinstance(last, Page)
        assert not last.more
        assert [p.offset for p in last.publications] == [7]

    async def test_since_the_current_position_returns_an_empty_page(self, broker: Broker) -> None:
        await publish(broker, "now", 1)
        current = await broker.position("now")
        page = await broker.since("now", current, 10, OPTIONS, T0)
        assert page == Page([], current)

    async def test_since_offset_zero_of_an_unknown_channel_is_an_empty_page(self, broker: Broker) -> None:
        current = await broker.position("fresh")
        assert await broker.since("fresh", current, 10, OPTIONS, T0) == Page([], current)

    async def test_since_returns_a_gap_when_the_epoch_changed(self, broker: Broker) -> None:
        for i in range(3):
            await publish(broker, "epochs", i)
        answer = await broker.since("epochs", Position("elsewhere", 2), 10, OPTIONS, T0)
        assert isinstance(answer, Gap)
        current = await broker.position("epochs")
        assert answer.epoch == current.epoch
        assert answer.position == current
        assert (answer.requested, answer.available_from) == (3, 1)
        # then what history still has: the new epoch from its first offset
        assert [p.offset for p in answer.publications] == [1, 2, 3]

    async def test_since_returns_a_gap_when_history_no_longer_reaches_back(self, broker: Broker) -> None:
        options = NamespaceOptions(history_size=3, history_ttl=3600)
        for i in range(10):
            await publish(broker, "lost", i, options=options)
        epoch = (await broker.position("lost")).epoch
        answer = await broker.since("lost", Position(epoch, 2), 10, options, T0)
        assert isinstance(answer, Gap)
        assert (answer.requested, answer.available_from) == (3, 8)
        assert [p.offset for p in answer.publications] == [8, 9, 10]
        assert answer.to_dict() == {"channel": "lost", "epoch": epoch, "requested": 3, "available_from": 8}

    async def test_since_a_position_ahead_of_the_channel_returns_a_gap(self, broker: Broker) -> None:
        await publish(broker, "ahead", 1)
        epoch = (await broker.position("ahead")).epoch
        answer = await broker.since("ahead", Position(epoch, 9), 10, OPTIONS, T0)
        assert isinstance(answer, Gap)
        assert answer.requested == 10

    # channels ----------------------------------------------------------------------------------

    async def test_channels_lists_published_channels_with_their_positions(self, broker: Broker) -> None:
        await broker.position("only:read")
        a = await publish(broker, "ns:a", 1)
        await publish(broker, "ns:b", 1)
        b = await publish(broker, "ns:b", 2)
        assert await broker.channels() == {"ns:a": a.position, "ns:b": b.position}

    # idempotency -------------------------------------------------------------------------------

    async def test_an_idempotency_key_seen_before_returns_the_original_as_a_duplicate(
        self, broker: Broker, recorder: Recorder
    ) -> None:
        await broker.subscribe("idem")
        first = await broker.publish(
            "idem",
            {"v": 1},
            event="message",
            options=OPTIONS,
            idempotency_key="k1",
            publication_id="p1",
            now_ms=T0,
        )
        again = await broker.publish(
            "idem",
            {"v": 2},
            event="message",
            options=OPTIONS,
            idempotency_key="k1",
            publication_id="p2",
            now_ms=T0 + 10,
        )
        assert not first.duplicate
        assert again.duplicate
        assert again.publication == first.publication
        await publish(broker, "idem", "after")
        await wait_until(lambda: len(recorder.offsets("idem")) == 2, what="two deliveries")
        assert recorder.offsets("idem") == [1, 2]
        assert next(p.id for p in recorder.publications) == "p1"

    async def test_idempotency_keys_are_per_channel(self, broker: Broker) -> None:
        one = await publish(broker, "idem:a", 1, key="same")
        two = await publish(broker, "idem:b", 2, key="same")
        assert (one.channel, two.channel) == ("idem:a", "idem:b")
        assert two.offset == 1
        assert two.data == 2

    # presence ----------------------------------------------------------------------------------

    async def test_presence_lists_added_clients_until_their_lease_ends(
        self, presence: PresenceManager
    ) -> None:
        now = time.time()
        alice = ClientInfo("c1", "alice", {"role": "admin"})
        bob = ClientInfo("c2", "bob")
        await presence.add("lobby", alice, 10, now)
        await presence.add("lobby", bob, 1, now)
        listed = await presence.list("lobby", now + 0.5)
        assert sorted(listed, key=lambda c: c.client) == [alice, bob]
        assert await presence.list("lobby", now + 2) == [alice]
        assert await presence.list("lobby", now + 11) == []

    async def test_presence_refreshing_a_lease_extends_it(self, presence: PresenceManager) -> None:
        now = time.time()
        carol = ClientInfo("c3", "carol")
        await presence.add("desk", carol, 1, now)
        await presence.add("desk", carol, 1, now + 0.9)
        assert await presence.list("desk", now + 1.5) == [carol]

    async def test_presence_remove_is_idempotent_and_per_channel(self, presence: PresenceManager) -> None:
        now = time.time()
        dave = ClientInfo("c4", "dave")
        await presence.add("x", dave, 10, now)
        await presence.add("y", dave, 10, now)
        await presence.remove("x", "c4")
        await presence.remove("x", "c4")
        await presence.remove("x", "never-there")
        assert await presence.list("x", now) == []
        assert await presence.list("y", now) == [dave]

    # health --------------------------------------------------------------------------------------

    async def test_ping_answers_while_the_store_is_reachable(self, broker: Broker) -> None:
        await broker.ping()
