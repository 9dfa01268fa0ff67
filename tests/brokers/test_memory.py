"""The in-memory broker against the conformance suite."""

from __future__ import annotations

import pytest

from tests.brokers.conformance import BrokerConformance, BrokerFactory
from tidings.brokers.memory import MemoryBroker


class TestMemoryBroker(BrokerConformance):
    multi_node = False

    @pytest.fixture
    def broker_factory(self) -> BrokerFactory:
        return MemoryBroker


# Names nobody uses (Issue 17.5): reads make no entry, ended leases leave none.


async def test_reading_never_published_channels_keeps_no_entry():
    from tidings.core.events import Gap, Page
    from tidings.core.permissions import NamespaceOptions
    from tidings.core.position import Position

    broker = MemoryBroker()
    options = NamespaceOptions()
    for i in range(20_000):
        assert await broker.latest(f"n{i}", 10, options, 0) == ([], Position(broker.epoch, 0))
        fresh = await broker.since(f"s{i}", Position(broker.epoch, 0), 10, options, 0)
        assert fresh == Page([], Position(broker.epoch, 0))
        lost = await broker.since(f"g{i}", Position("other", 4), 10, options, 0)
        assert isinstance(lost, Gap) and lost.position == Position(broker.epoch, 0)
        assert await broker.position(f"p{i}") == Position(broker.epoch, 0)
    assert broker._histories == {}
    # the position a reader got before the first publication stays valid for it
    await broker.publish("s0", 1, event="message", options=options, publication_id="a", now_ms=0)
    page = await broker.since("s0", Position(broker.epoch, 0), 10, options, 0)
    assert isinstance(page, Page) and [p.offset for p in page.publications] == [1]


async def test_memory_presence_forgets_a_channel_whose_leases_all_ended():
    from tidings.core.presence import ClientInfo
    from tidings.presence.memory import MemoryPresence

    presence = MemoryPresence()
    for i in range(1000):
        await presence.add(f"room:{i}", ClientInfo(f"c{i}", "", None), 1, 0)
        assert await presence.list(f"never:{i}", 0) == []
    assert len(presence._channels) == 1000
    for i in range(1000):
        assert await presence.list(f"room:{i}", 2) == []
    assert presence._channels == {}
