"""``tidings webhooks add|list|show|deliveries|replay|rotate|test|enable|disable|delete`` and
``tidings listen``.

The ``webhooks`` commands talk to a running server's API over HTTP (``TIDINGS_URL``,
``TIDINGS_API_KEY``). ``listen`` is a local receiver that verifies Standard Webhooks signatures
and prints what arrives (like ``stripe listen``). Mount into the main CLI with::

    from tidings.webhooks import cli as webhooks_cli
    cli.add_typer(webhooks_cli.app, name="webhooks")
    cli.command("listen")(webhooks_cli.listen)

``python -m tidings.webhooks.cli`` runs both on their own.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from typing import Annotated, Any

import httpx
import typer
import uvicorn
from rich.console import Console
from rich.table import Table
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tidings.exceptions import TidingsError
from tidings.webhooks.signing import verify_standard

__all__ = ["app", "listen", "main"]

app = typer.Typer(name="webhooks", help="Manage outbound webhook endpoints.", no_args_is_help=True)
console = Console()

UrlOption = Annotated[str, typer.Option("--url", envvar="TIDINGS_URL", help="Server address.")]
KeyOption = Annotated[str | None, typer.Option("--api-key", envvar="TIDINGS_API_KEY", help="Server API key.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
DEFAULT_URL = "http://127.0.0.1:8600"


def _call(
    url: str,
    api_key: str | None,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
) -> Any:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.request(
            method, url.rstrip("/") + path, json=body, params=params, headers=headers, timeout=30
        )
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach {url}: {exc}[/red]")
        raise typer.Exit(2) from None
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            message = f"{error['code']}: {error['message']}"
        except (ValueError, KeyError, TypeError):
            message = response.text[:500]
        console.print(f"[red]{response.status_code} {message}[/red]")
        raise typer.Exit(1)
    return response.json() if response.content else None


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def _id_column(table: Table, name: str, values: list[str]) -> None:
    """A column of ids, never cut nor wrapped (they are copied into the next command); a narrow
    terminal squeezes the other columns instead."""
    width = max((len(v) for v in values), default=len(name))
    table.add_column(name, no_wrap=True, min_width=width, overflow="fold")


def _when(value: float | None) -> str:
    return "" if value is None else datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")


@app.command("add")
def add(
    endpoint_url: Annotated[str, typer.Argument(help="Where to POST, http(s)://…")],
    channel: Annotated[
        list[str], typer.Option("--channel", "-c", help="Channel pattern (* wildcard); repeat.")
    ],
    event: Annotated[
        list[str] | None, typer.Option("--event", "-e", help="Only this event type; repeat.")
    ] = None,
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    ordered: Annotated[bool, typer.Option("--ordered", help="Strict ordering.")] = False,
    rate_limit: Annotated[float | None, typer.Option("--rate-limit", help="Deliveries per second.")] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Register an endpoint; prints its id and its signing secret (shown only now)."""
    body: dict[str, Any] = {
        "url": endpoint_url,
        "channels": channel,
        "description": description,
        "ordered": ordered,
    }
    if event:
        body["events"] = event
    if rate_limit is not None:
        body["rate_limit"] = rate_limit
    _print_json(_call(url, api_key, "POST", "/api/webhooks", body))


@app.command("list")
def list_(url: UrlOption = DEFAULT_URL, api_key: KeyOption = None, as_json: JsonOption = False) -> None:
    """List the endpoints."""
    found = _call(url, api_key, "GET", "/api/webhooks")["webhooks"]
    if as_json:
        _print_json(found)
        return
    table = Table()
    _id_column(table, "id", [e["id"] for e in found])
    for name in ("url", "channels", "events", "enabled", "description"):
        table.add_column(name)
    for e in found:
        enabled = "yes" if e["enabled"] else f"no ({e['disabled_reason']})"
        table.add_row(
            e["id"], e["url"], " ".join(e["channels"]), " ".join(e["events"] or []), enabled, e["description"]
        )
    console.print(table)


@app.command("show")
def show(endpoint_id: str, url: UrlOption = DEFAULT_URL, api_key: KeyOption = None) -> None:
    """Show one endpoint."""
    _print_json(_call(url, api_key, "GET", f"/api/webhooks/{endpoint_id}"))


@app.command("deliveries")
def deliveries(
    endpoint_id: str,
    status: Annotated[str | None, typer.Option("--status", help="pending, succeeded or failed.")] = None,
    limit: Annotated[int, typer.Option("--limit")] = 50,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """List an endpoint's deliveries, newest first (--json also shows their webhook-id)."""
    params: dict[str, Any] = {"limit": limit}
    if status:
        params["status"] = status
    found = _call(url, api_key, "GET", f"/api/webhooks/{endpoint_id}/deliveries", params=params)["deliveries"]
    if as_json:
        _print_json(found)
        return
    # No webhook-id column: with the whole delivery id (what replay takes) it would not fit 80
    # columns; --json has it, and tidings webhooks deliveries ID --json | jq finds it.
    table = Table()
    _id_column(table, "id", [d["id"] for d in found])
    for name in ("channel", "event", "status", "attempts", "last", "created"):
        table.add_column(name)
    for d in found:
        last = str(d["last_status"] or d["last_error"] or "")
        table.add_row(
            d["id"],
            d["channel"],
            d["event"],
            d["status"],
            str(d["attempts"]),
            last[:40],
            _when(d["created_at"]),
        )
    console.print(table)


@app.command("replay")
def replay(
    endpoint_id: str,
    delivery: Annotated[str | None, typer.Option("--delivery", help="Replay this delivery.")] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Replay every failed delivery since: Unix seconds, ISO 8601, or "
            "a duration like 2h / 30m / 1d.",
        ),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Deliver again one delivery, or every failed one since a time."""
    if (delivery is None) == (since is None):
        console.print("[red]give exactly one of --delivery and --since[/red]")
        raise typer.Exit(2)
    body: dict[str, Any] = {"delivery_id": delivery} if delivery else {"since": _parse_since(since or "")}
    _print_json(_call(url, api_key, "POST", f"/api/webhooks/{endpoint_id}/replay", body))


def _parse_since(value: str) -> float | str:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[:-1].replace(".", "", 1).isdigit() and value[-1:] in units:
        return time.time() - float(value[:-1]) * units[value[-1]]
    try:
        return float(value)
    except ValueError:
        return value  # ISO 8601: the server parses it


@app.command("rotate")
def rotate(
    endpoint_id: str,
    grace: Annotated[
        float | None,
        typer.Option("--grace", help="Seconds the old secret keeps signing (default: the server's)."),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: KeyOption = None,
) -> None:
    """Rotate the signing secret; prints the new one."""
    body = {"grace": grace} if grace is not None else None
    _print_json(_call(url, api_key, "POST", f"/api/webhooks/{endpoint_id}/rotate-secret", body))


@app.command("test")
def send_test(endpoint_id: str, url: UrlOption = DEFAULT_URL, api_key: KeyOption = None) -> None:
    """Send a test event (event ``webhook.test``) to the endpoint."""
    _print_json(_call(url, api_key, "POST", f"/api/webhooks/{endpoint_id}/test"))


@app.command("enable")
def enable(endpoint_id: str, url: UrlOption = DEFAULT_URL, api_key: KeyOption = None) -> None:
    """Enable an endpoint again (its pending deliveries resume)."""
    _print_json(_call(url, api_key, "PATCH", f"/api/webhooks/{endpoint_id}", {"enabled": True}))


@app.command("disable")
def disable(endpoint_id: str, url: UrlOption = DEFAULT_URL, api_key: KeyOption = None) -> None:
    """Disable an endpoint (nothing new is queued for it; pending deliveries wait)."""
    _print_json(_call(url, api_key, "PATCH", f"/api/webhooks/{endpoint_id}", {"enabled": False}))


@app.command("delete")
def delete(endpoint_id: str, url: UrlOption = DEFAULT_URL, api_key: KeyOption = None) -> None:
    """Delete an endpoint with its deliveries and attempt log."""
    _call(url, api_key, "DELETE", f"/api/webhooks/{endpoint_id}")


def listen_app(secrets: list[str], tolerance: float, out: Console, on_event: Any = None) -> Starlette:
    """The ``listen`` receiver: verifies (when given secrets) and prints every POST."""

    async def receive(request: Request) -> JSONResponse:
        body = await request.body()
        headers = dict(request.headers)
        verified = "unverified"
        if secrets:
            try:
                verify_standard(secrets, headers, body, time.time(), tolerance)
                verified = "verified"
            except TidingsError as exc:
                out.print(f"[red]✗ {request.url.path} refused: {exc.message}[/red]")
                return JSONResponse(exc.to_dict(), status_code=401)
        try:
            shown: Any = json.loads(body)
        except ValueError:
            shown = body.decode("utf-8", "replace")
        out.print(
            f"[green]✓ {verified}[/green] {request.url.path} webhook-id={headers.get('webhook-id', '-')}"
        )
        sys.stdout.write(json.dumps(shown) + "\n")
        sys.stdout.flush()
        if on_event is not None:
            on_event()
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/{path:path}", receive, methods=["POST"])])


def listen(
    port: Annotated[int, typer.Option("--port", "-p", help="Port to listen on.")] = 8700,
    secret: Annotated[
        list[str] | None,
        typer.Option("--secret", "-s", help="whsec_ secret to verify with; repeat during a rotation."),
    ] = None,
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    tolerance: Annotated[float, typer.Option("--tolerance", help="Timestamp tolerance, seconds.")] = 300.0,
    count: Annotated[
        int | None, typer.Option("--count", help="Exit after this many accepted webhooks.")
    ] = None,
) -> None:
    """A local webhook receiver that verifies Standard Webhooks signatures and prints them."""
    out = Console(stderr=True)
    received = 0
    server: uvicorn.Server | None = None

    def on_event() -> None:
        nonlocal received
        received += 1
        if count is not None and received >= count and server is not None:
            server.should_exit = True

    if not secret:
        out.print("[yellow]no --secret: printing webhooks without verifying them[/yellow]")
    web = listen_app(list(secret or []), tolerance, out, on_event)
    server = uvicorn.Server(
        uvicorn.Config(web, host=host, port=port, log_level="warning", ws="none", lifespan="off")
    )
    out.print(f"listening on http://{host}:{port}/ (Ctrl-C to stop)")
    server.run()


def main() -> None:
    root = typer.Typer(no_args_is_help=True)
    root.add_typer(app, name="webhooks")
    root.command("listen")(listen)
    root()


if __name__ == "__main__":
    main()
