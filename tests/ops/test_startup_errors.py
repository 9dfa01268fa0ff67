"""A node that cannot start says why in one line, and exits non-zero, without a traceback."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.ops.process import free_port, serve_failing
from tests.redis_server import RedisCluster, RedisServer, redis_available

redis_only = pytest.mark.skipif(not redis_available(), reason="redis-server is not installed")


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if "cannot start:" in line]


def assert_one_line_failure(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0], lines[0]


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    if not redis_available():
        pytest.skip("redis-server is not installed")
    with RedisCluster() as started:
        yield started


@redis_only
@pytest.mark.parametrize("http2", [False, True], ids=["uvicorn", "http2"])
def test_redis_url_at_a_cluster_node_says_use_redis_cluster(cluster: RedisCluster, http2: bool) -> None:
    port = cluster.nodes[0].port
    result = serve_failing(
        "--broker", f"redis://127.0.0.1:{port}/0", "--port", str(free_port()), *(["--http2"] if http2 else [])
    )
    assert_one_line_failure(result, "Redis Cluster node", f'broker = "redis-cluster://127.0.0.1:{port}"')


@redis_only
def test_redis_cluster_url_at_a_plain_redis_says_use_redis() -> None:
    with RedisServer() as plain:
        result = serve_failing(
            "--broker", f"redis-cluster://127.0.0.1:{plain.port}", "--port", str(free_port())
        )
    assert_one_line_failure(result, "not a cluster node", f'"redis://127.0.0.1:{plain.port}/0"')


def test_an_unreachable_redis_is_one_line() -> None:
    nobody = free_port()
    result = serve_failing("--broker", f"redis://:hunter2@127.0.0.1:{nobody}/0", "--port", str(free_port()))
    assert_one_line_failure(result, f"127.0.0.1:{nobody}", "does not answer")
    assert "hunter2" not in result.stderr
