"""``[consumers.NAME]``: each problem reported with its key; each kind names what it needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidings.consumers.service import KINDS, make_consumer
from tidings.exceptions import StartupError
from tidings.settings import ConsumerSettings, SettingsError, load_settings


def problems(**consumers: dict[str, object]) -> dict[str, str]:
    with pytest.raises(SettingsError) as caught:
        load_settings(consumers=consumers)
    return dict(caught.value.problems)


def test_each_kind_names_the_key_it_needs():
    assert problems(
        a={"kind": "redis_stream", "url": "redis://127.0.0.1"},
        b={"kind": "nats_jetstream", "url": "nats://127.0.0.1"},
        c={"kind": "amqp", "url": "amqp://guest:guest@127.0.0.1"},
    ) == {
        "consumers.a.stream": "kind redis_stream needs it",
        "consumers.b.stream": "kind nats_jetstream needs it",
        "consumers.c.queue": "kind amqp needs it",
    }


def test_bad_values_are_named_by_key():
    found = problems(
        a={"kind": "postgres", "url": "mysql://x"},
        b={"kind": "postgres", "url": "postgresql://x", "table": "orders; drop"},
        c={"kind": "kafka", "url": "x"},
        d={"kind": "postgres", "url": "postgresql://x", "channels": ["bad channel"]},
        e={"kind": "postgres", "url": "postgresql://x", "retry_base": 5, "retry_max": 1},
        f={"kind": "postgres"},
        g={"kind": "postgres", "url": "postgresql://x", "batch_size": 0},
    )
    assert found["consumers.a.url"].startswith("kind postgres needs a URL starting with postgresql://")
    assert "is not a table name" in found["consumers.b.table"]
    assert "'postgres', 'redis_stream', 'nats_jetstream' or 'amqp'" in found["consumers.c.kind"]
    assert "is not a channel pattern" in found["consumers.d.channels"]
    assert found["consumers.e.retry_max"] == "must be at least retry_base"
    assert found["consumers.f.url"] == "Field required"
    assert "greater than or equal to 1" in found["consumers.g.batch_size"]


def test_a_consumer_name_must_be_a_plain_word():
    assert (
        "use 1-64 of A-Z a-z 0-9 _ -"
        in problems(**{"my orders": {"kind": "postgres", "url": "postgresql://x"}})["consumers"]
    )


def test_consumers_come_from_the_file_and_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "tidings.toml"
    path.write_text(
        '[consumers.orders]\nkind = "postgres"\nurl = "postgresql://file/db"\ntable = "shop.outbox"\n'
    )
    monkeypatch.setenv("TIDINGS_CONSUMERS__ORDERS__URL", "postgresql://env/db")
    orders = load_settings(path).consumers["orders"]
    assert (orders.url, orders.table, orders.dead_letter, orders.enabled) == (
        "postgresql://env/db",
        "shop.outbox",
        "",
        True,
    )


def test_a_kind_whose_module_or_library_is_missing_says_what_to_install(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(KINDS, "amqp", ("tidings.consumers.not_installed", "Nothing", "amqp"))
    settings = ConsumerSettings(kind="amqp", url="amqp://127.0.0.1", queue="q")
    with pytest.raises(StartupError, match=r"consumer jobs: kind amqp needs .*pip install 'tidings\[amqp\]'"):
        make_consumer("jobs", settings)
