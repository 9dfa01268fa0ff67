"""Fixtures for the broker tests: real redis-server processes, started once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from tests.redis_server import RedisCluster, RedisServer, redis_available


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    if not redis_available():
        pytest.skip("redis-server is not installed")
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    if not redis_available():
        pytest.skip("redis-server is not installed")
    with RedisCluster() as cluster:
        yield cluster


@pytest.fixture
def flushed_redis(redis_server: RedisServer) -> RedisServer:
    """The session's Redis, emptied for this test."""
    with redis.Redis(port=redis_server.port) as client:
        client.flushall()
    return redis_server


@pytest.fixture
def flushed_cluster(redis_cluster: RedisCluster) -> RedisCluster:
    """The session's cluster, every master emptied for this test."""
    for node in redis_cluster.nodes:
        with redis.Redis(port=node.port) as client:
            client.flushall()
    return redis_cluster
