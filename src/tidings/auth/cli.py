"""CLI pieces: ``tidings token`` (mint a development token) and ``tidings keys create``.

Mount them on the main app::

    from tidings.auth.cli import keys_app, token_command
    app.command("token")(token_command)
    app.add_typer(keys_app, name="keys")

or take :data:`app`, a ``typer.Typer`` holding both (``token`` and ``keys create``).
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from tidings.auth.apikeys import SCOPES
from tidings.auth.tokens import mint_token
from tidings.core.channels import validate_channel, validate_pattern
from tidings.core.permissions import Capability
from tidings.exceptions import BadRequest
from tidings.settings import SettingsError, load_settings

__all__ = ["app", "create_key_command", "keys_app", "parse_grant", "token_command"]

API_KEY_PREFIX = "tdk_"

app = typer.Typer(help="Tokens and API keys.", no_args_is_help=True, add_completion=False)
keys_app = typer.Typer(help="Server API keys.", no_args_is_help=True, add_completion=False)


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def parse_grant(text: str) -> tuple[str, list[str]]:
    """``'chat:*=subscribe,publish'`` as ``("chat:*", ["publish", "subscribe"])``.

    A pattern without ``=`` grants ``subscribe``. Raises ``ValueError`` with the reason.
    """
    pattern, sep, caps_text = text.partition("=")
    pattern = pattern.strip()
    try:
        validate_pattern(pattern)
    except BadRequest as exc:
        raise ValueError(str(exc)) from None
    names = [c.strip() for c in caps_text.split(",") if c.strip()] if sep else ["subscribe"]
    if not names:
        raise ValueError(f"{text!r}: list capabilities after '=' (e.g. {pattern}=subscribe)")
    valid = {c.value for c in Capability}
    bad = [n for n in names if n not in valid]
    if bad:
        raise ValueError(f"{text!r}: unknown capability {bad[0]!r}; use {', '.join(sorted(valid))}")
    return pattern, sorted(set(names))


def _load_secret(config: Path | None) -> tuple[str, Any]:
    try:
        settings = load_settings(config)
    except SettingsError as exc:
        raise _fail(str(exc)) from None
    if not settings.token_secret:
        raise _fail(
            "no token_secret is set, so there is nothing to sign with.\n"
            "  Set one in the environment:\n"
            "    export TIDINGS_TOKEN_SECRET=$(python -c "
            "'import secrets; print(secrets.token_urlsafe(32))')\n"
            '  or put token_secret = "…" in the file you pass with --config,\n'
            "  and start `tidings serve` with the same secret.\n"
            "  (RS256/ES256 tokens are minted by your identity provider, not by this command.)"
        )
    return settings.token_secret, settings


def token_command(
    sub: Annotated[str, typer.Option("--sub", help="User id (the sub claim); '' for anonymous.")],
    channel: Annotated[
        list[str] | None,
        typer.Option(
            "--channel",
            "-c",
            help="Grant PATTERN=CAPS, e.g. 'chat:*=subscribe,publish' (repeatable; "
            "CAPS from subscribe, publish, presence, history; no '=' means subscribe).",
        ),
    ] = None,
    ttl: Annotated[int, typer.Option("--ttl", min=1, help="Seconds until the token expires.")] = 3600,
    info: Annotated[
        str | None,
        typer.Option("--info", help='JSON shown in presence, e.g. \'{"name":"Ann"}\'.'),
    ] = None,
    subscription: Annotated[
        str | None,
        typer.Option(
            "--subscription",
            help="Mint a subscription token for this one channel instead of a connection token.",
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Settings file (TOML) holding token_secret.")
    ] = None,
) -> None:
    """Mint a development HS256 token signed with the configured token_secret.

    Prints the token alone on stdout (for $(…)); its expiry goes to stderr.
    """
    grants: dict[str, list[str]] = {}
    for text in channel or []:
        try:
            pattern, caps = parse_grant(text)
        except ValueError as exc:
            raise _fail(f"--channel {exc}") from None
        grants[pattern] = sorted(set(grants.get(pattern, [])) | set(caps))
    info_value: Any = None
    if info is not None:
        try:
            info_value = json.loads(info)
        except ValueError:
            raise _fail(f"--info is not JSON: {info!r} (quote strings: '\"Ann\"')") from None
    if subscription is not None:
        if grants:
            raise _fail("--subscription and --channel exclude each other")
        try:
            validate_channel(subscription)
        except BadRequest as exc:
            raise _fail(f"--subscription: {exc}") from None
    secret, settings = _load_secret(config)
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + ttl}
    if subscription is not None:
        claims["channel"] = subscription
    elif grants:
        claims["channels"] = grants
    if info is not None:
        claims["info"] = info_value
    audience = settings.auth.audience
    if audience:
        claims["aud"] = audience
    if settings.auth.issuer:
        claims["iss"] = settings.auth.issuer
    typer.echo(mint_token(claims, secret, algorithm="HS256"))
    kind = "subscription" if subscription is not None else "connection"
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + ttl))
    typer.echo(f"{kind} token for {sub!r}, expires {expires}", err=True)


def create_key_command(
    scopes: Annotated[
        str, typer.Option("--scopes", help="Comma-separated: publish, read, admin.")
    ] = "publish,read",
    name: Annotated[str, typer.Option("--name", help="A label shown in logs.")] = "",
) -> None:
    """Print a new random server API key and the TOML to add to the settings file."""
    chosen = [s.strip() for s in scopes.split(",") if s.strip()]
    bad = [s for s in chosen if s not in SCOPES]
    if bad or not chosen:
        raise _fail(f"--scopes: use a comma-separated subset of {', '.join(SCOPES)}")
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    scopes_toml = ", ".join(json.dumps(s) for s in dict.fromkeys(chosen))
    typer.echo(key)
    typer.echo("")
    typer.echo("# add to tidings.toml (keep it secret; clients send Authorization: Bearer <key>):")
    typer.echo("[[api_keys]]")
    typer.echo(f"key = {json.dumps(key)}")
    typer.echo(f"scopes = [{scopes_toml}]")
    if name:
        typer.echo(f"name = {json.dumps(name)}")
    if sys.stdout.isatty():
        typer.echo("# or, one key with every scope: export TIDINGS_API_KEY=<key>", err=True)


app.command("token")(token_command)
keys_app.command("create")(create_key_command)
app.add_typer(keys_app, name="keys")
