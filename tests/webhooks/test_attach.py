"""attach_webhooks: what create_app calls."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from tidings.node import Node
from tidings.settings import Settings
from tidings.webhooks.service import attach_webhooks, store_path


async def test_attach_webhooks_mounts_the_routes_and_hooks_into_publish(tmp_path: Path) -> None:
    app = FastAPI()
    async with Node(Settings(webhooks={"store": str(tmp_path / "q.db")})) as node:
        service = await attach_webhooks(node, app)
        try:
            api = set(app.openapi()["paths"])
            assert {"/api/webhooks", "/api/webhooks/{endpoint_id}/replay"} <= api
            assert "/hooks/{name}" in {getattr(route, "path", "") for route in app.routes}
            assert service.on_publication in node.publish_hooks
            assert service.statistics()["queued"] == 0
        finally:
            await service.stop()
        assert service.on_publication not in node.publish_hooks


def test_the_store_sits_next_to_a_sqlite_broker() -> None:
    assert store_path(Settings(broker="sqlite:///data/t.db")) == Path("data/t-webhooks.db")
    assert store_path(Settings()) is None  # the memory broker's queue is in memory
    assert store_path(Settings(webhooks={"store": "/x/y.db"})) == Path("/x/y.db")
