"""``tidings config``: check a settings file, show the effective settings (secrets masked).

``tidings config check FILE`` reports every problem at once, each with its key (unknown keys,
wrong types, bad values, and the rule that a non-loopback bind needs secrets), and exits 1 if
there is any. It checks the file alone: ``TIDINGS_*`` variables are ignored, so they cannot hide
a mistake in the file (``--env`` takes them into account, as ``serve`` would).

``tidings config show [--config FILE] [--format toml|json]`` prints the settings a node would
run with (defaults, file, environment), with every secret masked.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from tidings.settings import Settings, SettingsError, is_loopback, load_settings

__all__ = ["app", "check_file", "mask_secrets", "to_toml"]

app = typer.Typer(
    name="config",
    help="Check and show settings.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

MASK = "********"
_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@/]+@")
_SECRET_NAME = re.compile(r"(^|_)(secret|key|password|token|client_secret)$")


@contextmanager
def _without_environment() -> Iterator[None]:
    saved = {k: v for k, v in os.environ.items() if k.startswith("TIDINGS_")}
    for key in saved:
        del os.environ[key]
    try:
        yield
    finally:
        os.environ.update(saved)


def _raw(path: Path) -> dict[str, Any] | None:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None


def _safe_bind_problem(raw: dict[str, Any]) -> tuple[str, str] | None:
    """The safe-bind rule on the raw file (pydantic skips it when any field is invalid)."""
    host = raw.get("host", "127.0.0.1")
    if not isinstance(host, str) or is_loopback(host) or raw.get("insecure") is True:
        return None
    if raw.get("token_secret") and (raw.get("api_key") or raw.get("api_keys")):
        return None
    return (
        "host",
        f"host {host!r} is not loopback: set token_secret and api_key, "
        "or insecure = true to serve without them",
    )


def _explain(key: str, message: str) -> tuple[str, str]:
    if key == "(settings)" and "not loopback" in message:
        return "host", message
    if message == "Extra inputs are not permitted":
        return key, "unknown key (docs/reference/settings.md lists every key)"
    return key, message


def check_file(path: Path, *, environment: bool = False) -> list[tuple[str, str]]:
    """Every problem of the settings file ``path`` as ``(key, message)``; [] when it is valid."""
    try:
        if environment:
            load_settings(path)
        else:
            with _without_environment():
                load_settings(path)
        return []
    except SettingsError as exc:
        problems = [_explain(key, message) for key, message in exc.problems]
    raw = _raw(path)
    if raw is not None and not any(key == "host" for key, _ in problems):
        extra = _safe_bind_problem(raw)
        if extra is not None:
            problems.append(extra)
    return problems


def mask_secrets(value: Any, name: str = "") -> Any:
    """``value`` with every secret-named string (api_key, token_secret, secret, key …) masked."""
    if isinstance(value, dict):
        return {k: mask_secrets(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v, name) for v in value]
    if isinstance(value, str) and value and _SECRET_NAME.search(name):
        return MASK
    if isinstance(value, str) and "://" in value:
        return _URL_PASSWORD.sub(r"\1" + MASK + "@", value)  # redis://:password@host
    return value


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{ "
            + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None)
            + " }"
        )
    raise TypeError(f"no TOML for {value!r}")


def _is_table_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """A small TOML writer for settings (no nulls in TOML: unset keys become comments)."""
    lines: list[str] = []
    tables: list[str] = []
    for key, value in data.items():
        path = f"{prefix}{_toml_key(key)}"
        if isinstance(value, dict):
            body = to_toml(value, f"{path}.")
            tables.append(f"\n[{path}]\n{body}" if body.strip() or not value else body)
        elif _is_table_list(value):
            for item in value:
                tables.append(f"\n[[{path}]]\n{to_toml(item, f'{path}.')}")
        elif value is None:
            lines.append(f"# {_toml_key(key)} is unset")
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    text = "\n".join(lines) + ("\n" if lines else "")
    return text + "".join(tables)


ConfigArg = Annotated[
    Path, typer.Argument(help="The TOML settings file to check.", exists=False, dir_okay=False)
]


@app.command()
def check(
    file: ConfigArg,
    env: Annotated[bool, typer.Option("--env/--no-env", help="Also apply TIDINGS_* variables.")] = False,
) -> None:
    """Validate FILE and report every problem with its key (exit 1 if any)."""
    problems = check_file(file, environment=env)
    if not problems:
        print(f"{file}: ok")
        return
    print(f"{file}: {len(problems)} problem{'s' if len(problems) != 1 else ''}")
    for key, message in problems:
        print(f"  {key}: {message}")
    raise typer.Exit(1)


@app.command()
def show(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="TOML settings file.", envvar="TIDINGS_CONFIG")
    ] = None,
    format: Annotated[str, typer.Option("--format", help="toml or json.")] = "toml",
) -> None:
    """Print the effective settings (defaults < file < environment), secrets masked."""
    try:
        settings = load_settings(config)
    except SettingsError as exc:
        print(str(exc), file=sys.stderr)
        raise typer.Exit(1) from None
    data = mask_secrets(effective(settings))
    if format == "json":
        print(json.dumps(data, indent=2, ensure_ascii=False))
    elif format == "toml":
        print(to_toml(data), end="")
    else:
        print("--format is toml or json", file=sys.stderr)
        raise typer.Exit(2)


def effective(settings: Settings) -> dict[str, Any]:
    """The settings as plain JSON values (unmasked: mask before showing them)."""
    # Here, not at the top: the webhook service (FastAPI, the node) would add a second and a half
    # to every `tidings config` command, for this one key.
    from tidings.webhooks.service import store_location

    data: dict[str, Any] = settings.model_dump(mode="json")
    # Where the webhook queue lives is decided by the broker when unset: say it.
    data["webhooks"]["store"] = store_location(settings)
    return data
