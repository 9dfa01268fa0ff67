"""The Redis broker on a three-master Redis Cluster: the conformance suite and sharded pub/sub."""

from __future__ import annotations

import pytest
import redis

from tests.brokers.conformance import (
    BrokerConformance,
    BrokerFactory,
    Recorder,
    publish,
    wait_until,
)
from tests.redis_server import RedisCluster
from tidings.brokers.redis import RedisBroker, channel_keys

pytestmark = pytest.mark.redis


class TestRedisClusterBroker(BrokerConformance):
    @pytest.fixture
    def broker_factory(self, flushed_cluster: RedisCluster) -> BrokerFactory:
        return lambda: RedisBroker(flushed_cluster.url)


async def test_channels_on_every_master_are_delivered_through_sharded_pubsub(
    flushed_cluster: RedisCluster,
) -> None:
    publisher = RedisBroker(flushed_cluster.url)
    listener = RedisBroker(flushed_cluster.url)
    seen = Recorder()
    await publisher.start(Recorder())
    await listener.start(seen)
    try:
        channels = [f"spread:{i}" for i in range(12)]
        owners = set()
        with redis.RedisCluster(host="127.0.0.1", port=flushed_cluster.nodes[0].port) as client:
            for channel in channels:
                node = client.get_node_from_key(channel_keys(channel).pubsub)
                owners.add(node.port)
        assert len(owners) == 3, "the channels should land on every master"
        for channel in channels:
            await listener.subscribe(channel)
        for channel in channels:
            await publish(publisher, channel, channel)
            await publish(publisher, channel, channel)
        await wait_until(lambda: len(seen.publications) == 24, what="24 deliveries")
        for channel in channels:
            assert seen.offsets(channel) == [1, 2]
        assert len(listener._listeners) == 3
        for node in flushed_cluster.nodes:
            assert node.cli("pubsub", "channels") == "\n"
        assert await listener.channels() == {c: (await listener.position(c)) for c in channels}
    finally:
        await publisher.close()
        await listener.close()
