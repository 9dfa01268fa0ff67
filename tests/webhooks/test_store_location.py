"""Where the webhook queue lives follows the broker, and one SQLite store serves one node.

Two nodes on one store file used to diverge silently (each keeps its endpoints and due deliveries
in memory); the second is now refused at start with a message that says what to do.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.ops.process import environment, free_port, running, serve_failing

from tidings.exceptions import StartupError
from tidings.node import Node
from tidings.settings import Settings, SettingsError, load_settings
from tidings.webhooks.service import WebhookService, store_location, store_path

ALLOW_LOOPBACK = {"allow_private": ["127.0.0.0/8"]}


async def test_a_second_node_on_the_same_store_file_is_refused_until_the_first_stops(tmp_path: Path) -> None:
    settings = Settings(webhooks={**ALLOW_LOOPBACK, "store": str(tmp_path / "hooks.db")})
    async with Node(settings) as first_node, Node(settings) as second_node:
        first = WebhookService(first_node)
        await first.start()
        try:
            await first.create("http://127.0.0.1:9/hook", ["orders:*"])
            second = WebhookService(second_node)
            with pytest.raises(StartupError) as refused:
                await second.start()
            message = refused.value.message
            assert f"another tidings node uses the webhook store {tmp_path / 'hooks.db'}" in message
            assert "give each node its own [webhooks] store" in message
            assert "Redis broker" in message
        finally:
            await first.stop()
        # The lock goes with the node: the next one starts and sees what the first made.
        third = WebhookService(second_node)
        await third.start()
        try:
            assert [e.url for e in third.all()] == ["http://127.0.0.1:9/hook"]
        finally:
            await third.stop()


async def test_two_nodes_on_one_sqlite_broker_are_told_it_serves_one_node(tmp_path: Path) -> None:
    settings = Settings(broker=f"sqlite:///{tmp_path / 'hub.db'}")
    async with Node(settings) as first_node, Node(settings) as second_node:
        first = WebhookService(first_node)
        await first.start()
        try:
            with pytest.raises(StartupError, match="a SQLite broker serves one node"):
                await WebhookService(second_node).start()
        finally:
            await first.stop()


def test_tidings_serve_on_a_store_another_node_holds_exits_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "tidings.toml"
    config.write_text(f'[webhooks]\nstore = "{tmp_path / "hooks.db"}"\n')
    with running(config, free_port(), tmp_path / "first.log"):
        result = serve_failing("--config", str(config), "--port", str(free_port()))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if "cannot start:" in line]
    assert len(lines) == 1, result.stderr
    assert "another tidings node uses the webhook store" in lines[0]


async def test_the_memory_broker_keeps_the_queue_in_memory_and_writes_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with Node(Settings(webhooks=ALLOW_LOOPBACK)) as node:
        service = WebhookService(node)
        await service.start()
        try:
            endpoint = await service.create("http://127.0.0.1:9/hook", ["orders:*"])
            await node.publish("orders:1", {"n": 1})
            assert len(await service.deliveries(endpoint.id)) == 1
        finally:
            await service.stop()
    assert os.listdir(tmp_path) == []


def test_the_settings_say_where_the_store_is() -> None:
    assert store_path(Settings()) is None
    assert store_location(Settings()) == "memory"
    assert store_path(Settings(broker="sqlite:///data/t.db")) == Path("data/t-webhooks.db")
    assert store_path(Settings(broker="sqlite:///data/t.db", webhooks={"store": "memory"})) is None
    assert store_path(Settings(webhooks={"store": "/x/y.db"})) == Path("/x/y.db")
    assert store_location(Settings(broker="redis://127.0.0.1:6390/0")) == ""
    with pytest.raises(SettingsError, match="with a Redis broker the webhook queue lives in"):
        load_settings(None, broker="redis://127.0.0.1:6390/0", webhooks={"store": "q.db"})


def test_config_show_states_the_store(tmp_path: Path) -> None:
    config = tmp_path / "tidings.toml"
    config.write_text(f'broker = "sqlite:///{tmp_path / "hub.db"}"\n')
    shown = subprocess.run(
        [sys.executable, "-m", "tidings", "config", "show", "--config", str(config)],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert f'store = "{tmp_path / "hub-webhooks.db"}"' in shown
    config.write_text("")
    shown = subprocess.run(
        [sys.executable, "-m", "tidings", "config", "show", "--config", str(config)],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert 'store = "memory"' in shown
