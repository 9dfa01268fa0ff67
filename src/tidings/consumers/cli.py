"""``tidings consumers init NAME`` and ``tidings consumers status``.

Both read the consumers from the settings (``--config`` / ``TIDINGS_CONFIG`` and the
environment, as ``tidings serve`` does) and talk to the sources themselves:

- ``init NAME`` creates what the consumer needs and is missing (PostgreSQL: the outbox table, its
  dead-letter table and the NOTIFY trigger; ``--sql`` prints the SQL instead of running it);
- ``status`` tells, per consumer, whether its source answers and how many messages wait there;
  ``--server URL`` asks a running node instead (its admin snapshot: published, failed,
  dead-lettered, reconnects too).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tidings.exceptions import TidingsError
from tidings.outbox import ddl
from tidings.settings import ConsumerSettings, Settings, SettingsError, load_settings

__all__ = ["app"]

app = typer.Typer(
    name="consumers",
    help="Consumers of a database outbox or a queue (the consumers.NAME sections of the settings).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
out = Console()

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file.", envvar="TIDINGS_CONFIG")
]


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(2)


def _settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except SettingsError as exc:
        raise _fail(str(exc)) from None


def _consumer_settings(settings: Settings, name: str) -> ConsumerSettings:
    found = settings.consumers.get(name)
    if found is None:
        names = ", ".join(sorted(settings.consumers)) or "none"
        raise _fail(f"no consumer {name!r} in the settings (configured: {names}); add [consumers.{name}]")
    return found


@app.command()
def init(
    name: Annotated[str, typer.Argument(help="The consumer's name (its section: consumers.NAME).")],
    config: ConfigOpt = None,
    sql: Annotated[bool, typer.Option("--sql", help="postgres: print the SQL, run nothing.")] = False,
) -> None:
    """Create what consumer NAME needs at its source (table and trigger, group, queue …)."""
    consumer_settings = _consumer_settings(_settings(config), name)
    if sql:
        if consumer_settings.kind != "postgres":
            raise _fail("--sql is for kind postgres")
        print(ddl(consumer_settings.table, consumer_settings.dead_letter), end="")
        return

    async def run() -> list[str]:
        from tidings.consumers.service import make_consumer  # here: it imports the node

        consumer = make_consumer(name, consumer_settings)
        try:
            await consumer.connect()
            return await consumer.setup()
        finally:
            await consumer.close()

    try:
        lines = asyncio.run(run())
    except TidingsError as exc:
        raise _fail(exc.message) from None
    except Exception as exc:
        raise _fail(f"consumer {name}: {type(exc).__name__}: {exc}") from None
    for line in lines:
        out.print(f"[green]ok[/] {line}")
    out.print(f"consumer {name} is ready")


async def _probe(name: str, settings: ConsumerSettings) -> dict[str, Any]:
    from tidings.consumers.service import make_consumer  # here: it imports the node

    consumer = make_consumer(name, settings)
    row: dict[str, Any] = {"name": name, "kind": settings.kind, "source": consumer.describe()}
    try:
        await asyncio.wait_for(consumer.connect(), 15)
        row |= {"connected": True, "error": None, "lag": await consumer.lag()}
    except Exception as exc:
        row |= {"connected": False, "error": f"{type(exc).__name__}: {exc}"[:300], "lag": None}
    finally:
        await consumer.close()
    return row


def _from_server(url: str, api_key: str | None) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(url.rstrip("/") + "/api/admin/snapshot", headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        raise _fail(f"cannot reach {url}: {exc}") from None
    if response.status_code != 200:
        raise _fail(f"{url}: {response.status_code} {response.text[:200]}")
    consumers: list[dict[str, Any]] = response.json().get("consumers", [])
    return consumers


@app.command()
def status(
    config: ConfigOpt = None,
    server: Annotated[
        str | None, typer.Option("--server", help="Ask this running node (its admin snapshot) instead.")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="TIDINGS_API_KEY", help="API key with the admin scope.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one object per consumer).")] = False,
) -> None:
    """Each consumer: does its source answer, how many messages wait. Exit 1 if one is down."""
    if server is not None:
        rows = _from_server(server, api_key)
    else:
        settings = _settings(config)

        async def probe_all() -> list[dict[str, Any]]:
            return list(await asyncio.gather(*(_probe(n, s) for n, s in settings.consumers.items())))

        try:
            rows = asyncio.run(probe_all())
        except TidingsError as exc:
            raise _fail(exc.message) from None
    if as_json:
        for row in rows:
            print(json.dumps(row))
    else:
        table = Table("consumer", "kind", "source", "reachable", "lag", "published", "dead-lettered", "error")
        for row in rows:
            table.add_row(
                row["name"],
                row["kind"],
                row.get("source", ""),
                "yes" if row["connected"] else "[red]no[/]",
                "-" if row.get("lag") is None else str(row["lag"]),
                str(row.get("published", "-")),
                str(row.get("dead_lettered", "-")),
                escape(row.get("error") or ""),
            )
        out.print(table if rows else escape("no consumers configured ([consumers.NAME])"))
    if any(not row["connected"] for row in rows):
        raise typer.Exit(1)
