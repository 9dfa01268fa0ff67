"""``tidings webhooks apps|event-types|send|portal`` against a real server."""

from __future__ import annotations

import asyncio
import json

from typer.testing import CliRunner

from conftest import Hub, Receiver, status, wait_for
from tidings.cli import app as tidings_cli


async def cli(hub: Hub, *args: str, stdin: str | None = None) -> tuple[int, str]:
    """Run the CLI in a worker thread (the server keeps serving on this loop)."""
    result = await asyncio.to_thread(
        CliRunner().invoke, tidings_cli, list(args), input=stdin, env={"TIDINGS_URL": hub.base_url}
    )
    return result.exit_code, result.stdout + result.stderr


async def test_apps_event_types_send_and_portal_from_the_command_line(hub: Hub, receiver: Receiver) -> None:
    code, out = await cli(
        hub, "webhooks", "apps", "create", "Acme", "--id", "acme", "--metadata", '{"plan": "pro"}'
    )
    assert code == 0, out
    assert json.loads(out)["metadata"] == {"plan": "pro"}
    code, out = await cli(hub, "webhooks", "apps", "list", "--json")
    assert [a["id"] for a in json.loads(out)] == ["acme"]
    code, out = await cli(hub, "webhooks", "apps", "list")
    assert "acme" in out and "Acme" in out
    code, out = await cli(hub, "webhooks", "apps", "update", "acme", "--name", "Acme Corp")
    assert json.loads(out)["name"] == "Acme Corp"

    schema = '{"type": "object", "required": ["order"]}'
    code, out = await cli(
        hub, "webhooks", "event-types", "create", "order.paid", "-d", "Paid", "--schema", "-", stdin=schema
    )
    assert code == 0, out
    assert json.loads(out)["schema"] == {"type": "object", "required": ["order"]}
    code, out = await cli(hub, "webhooks", "event-types", "list")
    assert "order.paid" in out
    code, out = await cli(hub, "webhooks", "event-types", "archive", "order.paid")
    assert json.loads(out)["archived"] is True
    code, out = await cli(hub, "webhooks", "event-types", "list", "--json")
    assert json.loads(out) == []
    code, out = await cli(hub, "webhooks", "event-types", "unarchive", "order.paid")
    code, out = await cli(hub, "webhooks", "event-types", "show", "order.paid")
    assert json.loads(out)["archived"] is False

    target = receiver.on("/acme", status(200))
    code, out = await cli(
        hub, "webhooks", "apps", "add-endpoint", "acme", target, "-e", "order.paid", "--rate-limit", "50"
    )
    assert code == 0, out
    endpoint = json.loads(out)
    assert endpoint["event_types"] == ["order.paid"] and endpoint["rate_limit"] == 50

    code, out = await cli(hub, "webhooks", "send", "acme", "order.paid", '{"order": "o-1"}', "-k", "o-1")
    assert code == 0, out
    sent = json.loads(out)
    code, out = await cli(hub, "webhooks", "send", "acme", "order.paid", '{"order": "o-1"}', "-k", "o-1")
    assert json.loads(out)["duplicate"] is True and json.loads(out)["id"] == sent["id"]
    await wait_for(lambda: len(receiver.at("/acme")) == 1)
    code, out = await cli(hub, "webhooks", "send", "acme", "order.paid", "{}")
    assert code == 1 and "422" in out and "order" in out
    code, out = await cli(hub, "webhooks", "send", "acme", "order.paid", "not json")
    assert code == 2
    code, out = await cli(hub, "webhooks", "apps", "messages", "acme", "--json")
    assert [m["id"] for m in json.loads(out)] == [sent["id"]]
    code, out = await cli(hub, "webhooks", "apps", "messages", "acme")
    assert "order.paid" in out

    code, out = await cli(hub, "webhooks", "portal", "acme", "--expiry", "600")
    assert code == 0 and out.startswith(f"{hub.base_url}/portal#token=tdp_")
    code, out = await cli(hub, "webhooks", "portal", "acme", "--read-only", "--json")
    assert set(json.loads(out)) == {"url", "token", "expires_at", "app_id"}
    token = json.loads(out)["token"]
    assert (
        await hub.client.get("/api/webhooks/apps/acme", headers={"Authorization": f"Bearer {token}"})
    ).status_code == 200
    code, out = await cli(hub, "webhooks", "portal", "acme", "--revoke")
    assert code == 0 and "revoked" in out
    assert (
        await hub.client.get("/api/webhooks/apps/acme", headers={"Authorization": f"Bearer {token}"})
    ).status_code == 401
    code, out = await cli(hub, "webhooks", "apps", "show", "acme")
    assert [e["id"] for e in json.loads(out)["endpoints"]] == [endpoint["id"]]
    code, out = await cli(hub, "webhooks", "apps", "delete", "acme")
    assert code == 0
    code, out = await cli(hub, "webhooks", "apps", "show", "acme")
    assert code == 1 and "not_found" in out
