"""``tidings webhooks apps|event-types|send|portal``: applications, the event-type catalog,
app messages and portal links, over a running server's API (``TIDINGS_URL``,
``TIDINGS_API_KEY``). Mounted on ``tidings webhooks`` by :func:`mount`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tidings.webhooks.cli import (
    DEFAULT_URL,
    JsonOption,
    KeyOption,
    UrlOption,
    _call,
    _id_column,
    _print_json,
    _when,
    console,
)

__all__ = ["apps", "event_types", "mount", "portal", "send"]

apps = typer.Typer(
    name="apps", help="Applications: one per customer, with its own endpoints.", no_args_is_help=True
)
event_types = typer.Typer(
    name="event-types", help="The event-type catalog (names and JSON Schemas).", no_args_is_help=True
)


def _json_arg(value: str, what: str) -> Any:
    """JSON from ``value``: ``-`` reads stdin, ``@file`` a file, else the text itself."""
    if value == "-":
        value = sys.stdin.read()
    elif value.startswith("@"):
        value = Path(value[1:]).read_text("utf-8")
    try:
        return json.loads(value)
    except ValueError as exc:
        console.print(f"[red]{what} is not JSON: {exc}[/red]")
        raise typer.Exit(2) from None


# apps ------------------------------------------------------------------------------------------


@apps.command("create")
def create_app(
    name: Annotated[str, typer.Argument(help="The customer's name, as the portal shows it.")],
    app_id: Annotated[str | None, typer.Option("--id", help="Your own id (default: one is made).")] = None,
    metadata: Annotated[str | None, typer.Option("--metadata", help="A JSON object kept with it.")] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Create an application."""
    body: dict[str, Any] = {"name": name}
    if app_id:
        body["id"] = app_id
    if metadata:
        body["metadata"] = _json_arg(metadata, "--metadata")
    _print_json(_call(url, api_key, "POST", "/api/webhooks/apps", body))


@apps.command("list")
def list_apps(url: UrlOption = DEFAULT_URL, api_key: KeyOption = None, as_json: JsonOption = False) -> None:
    """List the applications."""
    found = _call(url, api_key, "GET", "/api/webhooks/apps")["apps"]
    if as_json:
        _print_json(found)
        return
    table = Table()
    _id_column(table, "id", [a["id"] for a in found])
    table.add_column("name")
    table.add_column("created")
    for a in found:
        table.add_row(a["id"], a["name"], _when(a["created_at"]))
    console.print(table)


@apps.command("show")
def show_app(app_id: str, url: UrlOption = DEFAULT_URL, api_key: KeyOption = None) -> None:
    """Show an application with its endpoints."""
    shown = _call(url, api_key, "GET", f"/api/webhooks/apps/{app_id}")
    shown["endpoints"] = _call(url, api_key, "GET", f"/api/webhooks/apps/{app_id}/endpoints")["endpoints"]
    _print_json(shown)


@apps.command("update")
def update_app(
    app_id: str,
    name: Annotated[str | None, typer.Option("--name")] = None,
    metadata: Annotated[str | None, typer.Option("--metadata", help="A JSON object (replaces).")] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Rename an application or replace its metadata."""
    body: dict[str, Any] = {}
    if name is not None:
        body["name"] = name
    if metadata is not None:
        body["metadata"] = _json_arg(metadata, "--metadata")
    _print_json(_call(url, api_key, "PATCH", f"/api/webhooks/apps/{app_id}", body))


@apps.command("delete")
def delete_app(app_id: str, url: UrlOption = DEFAULT_URL, api_key: KeyOption = None) -> None:
    """Delete an application with its endpoints, their attempt logs and its messages."""
    _call(url, api_key, "DELETE", f"/api/webhooks/apps/{app_id}")


@apps.command("add-endpoint")
def add_endpoint(
    app_id: str,
    endpoint_url: Annotated[str, typer.Argument(help="Where to POST, http(s)://…")],
    event_type: Annotated[
        list[str] | None, typer.Option("--event-type", "-e", help="Only this event type; repeat.")
    ] = None,
    channel: Annotated[
        list[str] | None, typer.Option("--channel", "-c", help="Also this channel pattern; repeat.")
    ] = None,
    rate_limit: Annotated[float | None, typer.Option("--rate-limit", help="Deliveries per second.")] = None,
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Add an endpoint to an application; prints its id and signing secret."""
    body: dict[str, Any] = {"url": endpoint_url, "description": description}
    if event_type:
        body["event_types"] = event_type
    if channel:
        body["channels"] = channel
    if rate_limit is not None:
        body["rate_limit"] = rate_limit
    _print_json(_call(url, api_key, "POST", f"/api/webhooks/apps/{app_id}/endpoints", body))


@apps.command("messages")
def messages(
    app_id: str,
    limit: Annotated[int, typer.Option("--limit")] = 50,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """List an application's messages, newest first."""
    found = _call(url, api_key, "GET", f"/api/webhooks/apps/{app_id}/messages", params={"limit": limit})
    if as_json:
        _print_json(found["messages"])
        return
    table = Table()
    _id_column(table, "id", [m["id"] for m in found["messages"]])
    for name in ("event type", "endpoints", "created"):
        table.add_column(name)
    for m in found["messages"]:
        table.add_row(m["id"], m["event_type"], str(len(m["deliveries"])), _when(m["created_at"]))
    console.print(table)


# event types -----------------------------------------------------------------------------------


@event_types.command("create")
def create_event_type(
    name: Annotated[str, typer.Argument(help="e.g. invoice.paid")],
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    schema: Annotated[
        str | None, typer.Option("--schema", help="JSON Schema of the payload: JSON, @file or - (stdin).")
    ] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Add an event type to the catalog."""
    body: dict[str, Any] = {"name": name, "description": description}
    if schema is not None:
        body["schema"] = _json_arg(schema, "--schema")
    _print_json(_call(url, api_key, "POST", "/api/webhooks/event-types", body))


@event_types.command("list")
def list_event_types(
    archived: Annotated[bool, typer.Option("--archived", help="Include archived ones.")] = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the catalog."""
    params = {"include_archived": "true"} if archived else {}
    found = _call(url, api_key, "GET", "/api/webhooks/event-types", params=params)["event_types"]
    if as_json:
        _print_json(found)
        return
    table = Table()
    for name in ("name", "description", "schema", "archived"):
        table.add_column(name)
    for t in found:
        table.add_row(
            t["name"], t["description"], "yes" if t["schema"] else "", "yes" if t["archived"] else ""
        )
    console.print(table)


@event_types.command("show")
def show_event_type(name: str, url: UrlOption = DEFAULT_URL, api_key: KeyOption = None) -> None:
    """Show an event type with its schema."""
    _print_json(_call(url, api_key, "GET", f"/api/webhooks/event-types/{name}"))


@event_types.command("archive")
def archive(name: str, url: UrlOption = DEFAULT_URL, api_key: KeyOption = None) -> None:
    """Archive an event type (hidden from the catalog; its messages are still accepted)."""
    _print_json(_call(url, api_key, "DELETE", f"/api/webhooks/event-types/{name}"))


@event_types.command("unarchive")
def unarchive(name: str, url: UrlOption = DEFAULT_URL, api_key: KeyOption = None) -> None:
    """Bring an archived event type back."""
    _print_json(_call(url, api_key, "PATCH", f"/api/webhooks/event-types/{name}", {"archived": False}))


# send and portal -------------------------------------------------------------------------------


def send(
    app_id: Annotated[str, typer.Argument(help="The application.")],
    event_type: Annotated[str, typer.Argument(help="The event type, e.g. invoice.paid.")],
    payload: Annotated[str, typer.Argument(help="The payload: JSON, @file or - (stdin).")] = "-",
    idempotency_key: Annotated[
        str | None, typer.Option("--idempotency-key", "-k", help="Sending again with it sends nothing.")
    ] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Send a message to an application's endpoints that take its event type."""
    body: dict[str, Any] = {"event_type": event_type, "payload": _json_arg(payload, "the payload")}
    if idempotency_key:
        body["idempotency_key"] = idempotency_key
    _print_json(_call(url, api_key, "POST", f"/api/webhooks/apps/{app_id}/messages", body))


def portal(
    app_id: Annotated[str, typer.Argument(help="The application.")],
    expiry: Annotated[float, typer.Option("--expiry", help="Seconds the link works.")] = 3600,
    read_only: Annotated[bool, typer.Option("--read-only", help="The customer may only look.")] = False,
    revoke: Annotated[
        bool, typer.Option("--revoke", help="Instead: make every link made so far stop working.")
    ] = False,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Make a portal link for an application's customer (prints the URL), or revoke them all."""
    if revoke:
        _call(url, api_key, "DELETE", f"/api/webhooks/apps/{app_id}/portal")
        sys.stdout.write(f"every portal link of {app_id} made so far is revoked\n")
        return
    body = {"expiry": expiry, "read_only": read_only}
    answer = _call(url, api_key, "POST", f"/api/webhooks/apps/{app_id}/portal", body)
    if as_json:
        _print_json(answer)
    else:
        sys.stdout.write(answer["url"] + "\n")


def mount(webhooks: typer.Typer) -> None:
    """Add these commands to ``tidings webhooks``."""
    webhooks.add_typer(apps, name="apps")
    webhooks.add_typer(event_types, name="event-types")
    webhooks.command("send")(send)
    webhooks.command("portal")(portal)
