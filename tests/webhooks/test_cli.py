"""The CLI against a real server, and ``listen`` receiving a real delivery."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import httpx
import typer
from typer.testing import CliRunner

from conftest import Hub, Receiver, free_port, status, wait_for
from tidings.webhooks import cli as webhooks_cli

SRC = Path(__file__).parents[2] / "src"


async def cli(hub: Hub, *args: str) -> tuple[int, str, str]:
    """Run the CLI in a worker thread (the server keeps serving on this loop)."""
    runner = CliRunner()
    root = typer.Typer()
    root.add_typer(webhooks_cli.app, name="webhooks")
    result = await asyncio.to_thread(runner.invoke, root, list(args), env={"TIDINGS_URL": hub.base_url})
    return result.exit_code, result.stdout, result.stderr


async def test_webhooks_commands_drive_the_server_api(hub: Hub, receiver: Receiver) -> None:
    url = receiver.on("/cli", status(200))
    code, out, err = await cli(hub, "webhooks", "add", url, "-c", "orders:*", "-d", "from cli")
    assert code == 0, err
    created = json.loads(out)
    assert created["secret"].startswith("whsec_")
    code, out, _ = await cli(hub, "webhooks", "list", "--json")
    assert [e["id"] for e in json.loads(out)] == [created["id"]]
    code, out, _ = await cli(hub, "webhooks", "show", created["id"])
    assert json.loads(out)["description"] == "from cli"
    code, out, _ = await cli(hub, "webhooks", "test", created["id"])
    assert code == 0
    await wait_for(lambda: len(receiver.at("/cli")) == 1)
    code, out, _ = await cli(hub, "webhooks", "rotate", created["id"], "--grace", "0")
    assert json.loads(out)["secret"] != created["secret"]
    code, out, _ = await cli(hub, "webhooks", "deliveries", created["id"], "--json")
    assert len(json.loads(out)) == 1
    code, out, _ = await cli(hub, "webhooks", "replay", created["id"], "--since", "1h")
    assert json.loads(out) == {"replayed": 0}
    code, out, _ = await cli(hub, "webhooks", "disable", created["id"])
    assert json.loads(out)["enabled"] is False
    code, out, _ = await cli(hub, "webhooks", "enable", created["id"])
    assert json.loads(out)["enabled"] is True
    code, out, err = await cli(hub, "webhooks", "show", "ep_missing")
    assert code == 1
    assert "not_found" in out + err
    code, _, _ = await cli(hub, "webhooks", "delete", created["id"])
    assert code == 0
    assert hub.server.service.endpoints == {}


async def test_listen_verifies_and_prints_a_delivery(hub: Hub) -> None:
    port = free_port()
    created = await hub.create(f"http://127.0.0.1:{port}/in", ["c"])
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tidings.webhooks.cli",
        "listen",
        "--port",
        str(port),
        "--count",
        "1",
        "--secret",
        created["secret"],
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(400):
                try:
                    probe = await client.post(f"http://127.0.0.1:{port}/probe", content=b"{}")
                    assert probe.status_code == 401  # unsigned: refused, not counted
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
        await hub.publish("c", {"hello": "listen"})
        out, err = await asyncio.wait_for(process.communicate(), 20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0
    assert json.loads(out.decode().strip())["data"] == {"hello": "listen"}
    assert "refused" in err.decode()
    assert "verified" in err.decode()


async def tidings_at_80_columns(hub: Hub, *args: str) -> str:
    """The real command in a real 80-column terminal's width (rich reads COLUMNS at start)."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "80", "TIDINGS_URL": hub.base_url}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tidings",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_lists_show_whole_ids_in_80_columns(hub: Hub, receiver: Receiver) -> None:
    url = receiver.on("/a-rather-long-path/for-a-receiver/that-takes-room", status(200))
    endpoint = await hub.create(
        url, ["orders:*", "invoices:*"], description="an endpoint with a description that takes room"
    )
    await hub.publish("orders:1", {"n": 1})
    await wait_for(lambda: len(receiver.at("/a-rather-long-path/for-a-receiver/that-takes-room")) == 1)
    listed = await tidings_at_80_columns(hub, "webhooks", "list")
    assert endpoint["id"] in listed, listed
    assert max(len(line) for line in listed.splitlines()) <= 80
    delivery = (await hub.deliveries(endpoint["id"]))[0]
    shown = await tidings_at_80_columns(hub, "webhooks", "deliveries", endpoint["id"])
    assert delivery["id"] in shown, shown
    assert max(len(line) for line in shown.splitlines()) <= 80
