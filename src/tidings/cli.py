"""The ``tidings`` command line: serve, publish, subscribe, history, presence, and more.

Client commands read ``TIDINGS_URL`` (default ``http://127.0.0.1:8600``) and ``TIDINGS_API_KEY``.
Output is NDJSON (one JSON object per line) for piping; ``--pretty`` is for people.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.console import Console

from tidings._version import __version__
from tidings.auth import cli as auth_cli
from tidings.config_cli import app as config_app
from tidings.consumers import cli as consumers_cli
from tidings.exceptions import TidingsError
from tidings.settings import SettingsError, load_settings, served
from tidings.webhooks import apps_cli as webhooks_apps_cli
from tidings.webhooks import cli as webhooks_cli

app = typer.Typer(
    name="tidings",
    help="tidings: a realtime event hub. Publish once; every subscriber gets it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
out = Console()

DEFAULT_URL = "http://127.0.0.1:8600"
UrlOpt = Annotated[str, typer.Option("--url", envvar="TIDINGS_URL", help="Server base URL.")]
KeyOpt = Annotated[str | None, typer.Option("--api-key", envvar="TIDINGS_API_KEY", help="Server API key.")]
PrettyOpt = Annotated[bool, typer.Option("--pretty", help="Readable output instead of NDJSON.")]


def _version(value: bool) -> None:
    if value:
        print(f"tidings {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """tidings: a realtime event hub."""


def fail(message: str, hint: str = "") -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}")
    if hint:
        err.print(f"[dim]{hint}[/]")
    return typer.Exit(2)


def emit(obj: Any, pretty: bool) -> None:
    if pretty:
        out.print_json(json.dumps(obj))
    else:
        sys.stdout.write(orjson.dumps(obj).decode() + "\n")
        sys.stdout.flush()


def api_client(url: str, api_key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=30)


def api_call(url: str, api_key: str | None, method: str, path: str, **kwargs: Any) -> Any:
    try:
        with api_client(url, api_key) as client:
            response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise fail(
            f"cannot reach {url}: {exc}", "Is the server running (tidings serve)? Set TIDINGS_URL or --url."
        ) from None
    body = response.json() if response.content else {}
    if response.status_code >= 400:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        raise fail(f"{response.status_code} {error.get('code', '')}: {error.get('message', '')}")
    return body


def parse_data(value: str) -> Any:
    """DATA as JSON when it parses, else as a string."""
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value


@app.command()
def serve(
    # The defaults live in Settings (None: not given, the file or environment decides). Not
    # "[default: …]" in a help text: rich reads it as markup and drops it.
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8600; 0 = any free).")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML settings file.", envvar="TIDINGS_CONFIG")
    ] = None,
    broker: Annotated[
        str | None, typer.Option(help="memory (default) | sqlite:///f.db | redis://… | redis-cluster://…")
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="debug|info|warning|error")] = None,
    insecure: Annotated[bool, typer.Option(help="Allow a public bind without secrets.")] = False,
    certfile: Annotated[Path | None, typer.Option(help="TLS certificate (serves https/wss).")] = None,
    keyfile: Annotated[Path | None, typer.Option(help="TLS private key.")] = None,
    http2: Annotated[
        bool, typer.Option("--http2", help="Serve HTTP/2 with Hypercorn (h2 over TLS, h2c without).")
    ] = False,
) -> None:
    """Run a tidings node (the server)."""
    # Here, not at the top: the whole server (uvicorn, the app, the node) is a second of
    # imports every other command of the CLI would pay for nothing.
    from tidings.server.run import run

    try:
        settings = load_settings(
            config, host=host, port=port, broker=broker, log_level=log_level, insecure=insecure or None
        )
    except SettingsError as exc:
        raise fail(str(exc), "Fix the keys named above (see docs/reference/settings.md).") from None
    settings = served(settings)
    if http2:
        from tidings.server.http2 import run_http2  # here: Hypercorn, only for --http2

        run_http2(settings, certfile=certfile, keyfile=keyfile)
        return
    run(settings, certfile=certfile, keyfile=keyfile)


@app.command()
def publish(
    channel: Annotated[str, typer.Argument(help="Channel name, e.g. chat:lobby.")],
    data: Annotated[
        str | None, typer.Argument(help="JSON (or a plain string); '-' reads NDJSON lines from stdin.")
    ] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Read DATA from a file.")] = None,
    event: Annotated[str, typer.Option(help="Event type.")] = "message",
    idempotency_key: Annotated[str | None, typer.Option(help="Publish at most once per key.")] = None,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
    pretty: PrettyOpt = False,
) -> None:
    """Publish DATA to CHANNEL through the server API."""
    if file is not None:
        values = [parse_data(file.read_text())]
    elif data == "-":
        values = [parse_data(line) for line in sys.stdin if line.strip()]
    elif data is not None:
        values = [parse_data(data)]
    else:
        raise fail("give DATA, '-' for stdin, or --file")
    for value in values:
        body: dict[str, Any] = {"channel": channel, "data": value, "event": event}
        if idempotency_key:
            body["idempotency_key"] = idempotency_key
        emit(api_call(url, api_key, "POST", "/api/publish", json=body), pretty)


@app.command()
def history(
    channel: Annotated[str, typer.Argument(help="Channel name.")],
    since: Annotated[int | None, typer.Option(help="Last offset seen (omit: the latest).")] = None,
    limit: Annotated[int, typer.Option(help="Most publications to show.")] = 100,
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
    pretty: PrettyOpt = False,
) -> None:
    """Print a channel's stored publications, one per line."""
    params: dict[str, Any] = {"limit": limit}
    if since is not None:
        params["since"] = since
    body = api_call(url, api_key, "GET", f"/api/channels/{channel}/history", params=params)
    if body.get("gap"):
        err.print(f"[yellow]gap:[/] {body['gap']}")
    for pub in body["publications"]:
        emit(pub, pretty)


@app.command()
def presence(
    channel: Annotated[str, typer.Argument(help="Channel name.")],
    url: UrlOpt = DEFAULT_URL,
    api_key: KeyOpt = None,
    pretty: PrettyOpt = False,
) -> None:
    """Print the clients present in a channel."""
    body = api_call(url, api_key, "GET", f"/api/channels/{channel}/presence")
    for client in body["clients"]:
        emit(client, pretty)


@app.command()
def subscribe(
    channels: Annotated[list[str], typer.Argument(help="One or more channels.")],
    transport: Annotated[str, typer.Option(help="ws|sse|stream|longpoll|poll")] = "ws",
    cursor: Annotated[str | None, typer.Option(help="Resume after this cursor.")] = None,
    token: Annotated[str | None, typer.Option(envvar="TIDINGS_TOKEN", help="Connection token.")] = None,
    count: Annotated[int | None, typer.Option(help="Exit after this many publications.")] = None,
    delta: Annotated[
        bool, typer.Option(help="Ask for delta updates (ws, sse, stream); printed in full as ever.")
    ] = False,
    url: UrlOpt = DEFAULT_URL,
    pretty: PrettyOpt = False,
) -> None:
    """Print publications as they arrive (NDJSON; notices such as gaps go to stderr)."""
    from tidings.client.subscribe import run_subscribe  # here: the client, only for this command

    try:
        asyncio.run(
            run_subscribe(
                url,
                channels,
                transport=transport,
                cursor=cursor,
                token=token,
                count=count,
                delta=delta,
                emit=lambda obj: emit(obj, pretty),
                notice=lambda obj: err.print(f"[yellow]{obj}[/]"),
            )
        )
    except KeyboardInterrupt:
        pass
    except TidingsError as exc:
        raise fail(f"{exc.code}: {exc.message}") from None
    except (OSError, ValueError) as exc:
        raise fail(str(exc), "Is the server running (tidings serve)? Set TIDINGS_URL or --url.") from None


def _mount_subcommands() -> None:
    app.add_typer(auth_cli.app)  # token, keys
    app.add_typer(config_app, name="config")
    app.add_typer(webhooks_cli.app, name="webhooks")
    webhooks_apps_cli.mount(webhooks_cli.app)
    app.add_typer(consumers_cli.app, name="consumers")
    app.command("listen")(webhooks_cli.listen)


_mount_subcommands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
