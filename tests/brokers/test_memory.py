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
