"""The AppStore contract on every webhook store (SQLite, Redis, Redis Cluster): records read back
as written, create-if-absent, the first message of an id kept, one portal key for every node."""

from __future__ import annotations

import pytest
from test_store import (  # noqa: F401  (fixtures)
    StoreFactory,
    cluster_url,
    redis_cluster,
    redis_server,
    redis_url,
    reopen,
)

from tidings.webhooks.app_store import App, AppMessage, EventType, app_store_for


def message(ident: str, at: float, app_id: str = "acme", **extra: object) -> AppMessage:
    return AppMessage(ident, app_id, "order.paid", {"n": ident}, '{"type":"order.paid"}', at, **extra)  # type: ignore[arg-type]


async def test_apps_event_types_and_messages_read_back_as_written(reopen: StoreFactory) -> None:  # noqa: F811
    queue = await reopen()
    store = app_store_for(queue)
    await store.open()
    await store.open()  # twice is harmless
    acme = App("acme", "Acme", {"plan": "pro", "seats": [1, 2]}, 2.0, 2.0)
    assert await store.create_app(acme) is True
    assert await store.create_app(App("acme", "Other")) is False
    assert await store.get_app("acme") == acme
    await store.create_app(App("globex", "Globex", {}, 1.0, 1.0))
    assert [a.id for a in await store.list_apps()] == ["globex", "acme"]
    await store.put_app(App("acme", "Acme Corp", {}, 2.0, 3.0))
    assert (await store.get_app("acme")).name == "Acme Corp"  # type: ignore[union-attr]

    paid = EventType("order.paid", "Paid", {"type": "object"}, False, 1.0, 1.0)
    assert await store.create_event_type(paid) is True
    assert await store.create_event_type(EventType("order.paid")) is False
    await store.put_event_type(EventType("a.first", archived=True))
    assert await store.get_event_type("order.paid") == paid
    assert [t.name for t in await store.list_event_types()] == ["a.first", "order.paid"]
    assert await store.get_event_type("missing") is None

    first = message("m1", 10.0, idempotency_key="k", deliveries=["d1", "d2"])
    assert await store.add_message(first) == first
    assert await store.add_message(message("m1", 11.0)) == first  # the first record stays
    for n in range(2, 6):
        await store.add_message(message(f"m{n}", 10.0 + n))
    await store.add_message(message("g1", 1.0, app_id="globex"))
    newest = await store.list_messages("acme", 3)
    assert [m.id for m in newest] == ["m5", "m4", "m3"]
    assert [m.id for m in await store.list_messages("acme", 10, before=13.0)] == ["m2", "m1"]
    assert await store.get_message("globex", "m1") is None

    assert await store.delete_app("acme") is True
    assert await store.delete_app("acme") is False
    assert await store.get_app("acme") is None
    assert await store.list_messages("acme", 10) == []
    assert [m.id for m in await store.list_messages("globex", 10)] == ["g1"]


async def test_the_portal_key_is_made_once_and_survives_a_reopen(reopen: StoreFactory) -> None:  # noqa: F811
    queue = await reopen()
    store = app_store_for(queue)
    await store.open()
    key = await store.portal_key()
    assert len(key) >= 32 and await store.portal_key() == key
    await queue.close()  # a SQLite queue serves one node at a time
    other = app_store_for(await reopen())  # another node, or this one after a restart
    await other.open()
    assert await other.portal_key() == key


def test_an_unknown_queue_has_no_app_store() -> None:
    with pytest.raises(TypeError):
        app_store_for(object())  # type: ignore[arg-type]
