"""``tidings token`` and ``tidings keys create``, run through typer's test runner."""

from __future__ import annotations

import time
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.auth.helpers import SECRET
from tidings.auth.apikeys import check_api_key
from tidings.auth.cli import app, parse_grant
from tidings.auth.tokens import TokenVerifier
from tidings.core.permissions import Capability
from tidings.exceptions import Forbidden
from tidings.settings import load_settings

runner = CliRunner()


def mint(*args: str, secret: str | None = SECRET) -> tuple[int, str, str]:
    env = {"TIDINGS_TOKEN_SECRET": secret} if secret else {}
    result = runner.invoke(app, ["token", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


def test_token_mints_a_connection_token_the_verifier_accepts() -> None:
    code, out, err = mint(
        "--sub", "ann", "--channel", "chat:*=subscribe,publish", "-c", "news",
        "--ttl", "120", "--info", '{"name": "Ann"}',
    )  # fmt: skip
    assert code == 0, err
    token = out.strip()
    assert "\n" not in token
    creds = TokenVerifier(secret=SECRET).verify_connection_nowait(token)
    assert creds.user == "ann"
    assert creds.grants == {
        "chat:*": frozenset({Capability.SUBSCRIBE, Capability.PUBLISH}),
        "news": frozenset({Capability.SUBSCRIBE}),
    }
    assert creds.info == {"name": "Ann"}
    assert creds.expires_at is not None
    assert 100 < creds.expires_at - time.time() <= 120
    assert "connection token for 'ann', expires" in err


def test_token_mints_a_subscription_token() -> None:
    code, out, _ = mint("--sub", "ann", "--subscription", "room:7")
    assert code == 0
    grant = TokenVerifier(secret=SECRET).verify_subscription_nowait(out.strip(), channel="room:7", user="ann")
    assert grant.channel == "room:7"


def test_token_carries_the_configured_audience_and_issuer(tmp_path: Path) -> None:
    config = tmp_path / "tidings.toml"
    config.write_text(f'token_secret = "{SECRET}"\n[auth]\naudience = "hub"\nissuer = "https://idp.test"\n')
    result = runner.invoke(app, ["token", "--sub", "bob", "--config", str(config)])
    assert result.exit_code == 0, result.stderr
    verifier = TokenVerifier.from_settings(load_settings(config))
    assert verifier.verify_connection_nowait(result.stdout.strip()).user == "bob"


def test_token_without_a_secret_says_what_to_do() -> None:
    code, out, err = mint("--sub", "ann", secret=None)
    assert code == 2
    assert out == ""
    assert "no token_secret is set" in err
    assert "TIDINGS_TOKEN_SECRET" in err
    assert "--config" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--channel", "chat:*=own"], "unknown capability 'own'"),
        (["--channel", "chat lobby=subscribe"], "invalid channel pattern"),
        (["--channel", "chat:*="], "list capabilities after '='"),
        (["--info", "{oops"], "--info is not JSON"),
        (["--subscription", "bad channel"], "--subscription"),
        (["--subscription", "a", "--channel", "b"], "exclude each other"),
    ],
)
def test_token_refuses_bad_options_with_a_reason(args: list[str], message: str) -> None:
    code, _, err = mint("--sub", "ann", *args)
    assert code == 2
    assert message in err


def test_parse_grant_defaults_to_subscribe_and_dedupes() -> None:
    assert parse_grant("news") == ("news", ["subscribe"])
    assert parse_grant("a:*=publish, subscribe,publish") == ("a:*", ["publish", "subscribe"])


def test_keys_create_prints_a_key_and_toml_that_settings_accept(tmp_path: Path) -> None:
    result = runner.invoke(app, ["keys", "create", "--scopes", "publish", "--name", "ci"])
    assert result.exit_code == 0, result.stderr
    key, blank, *toml_lines = result.stdout.splitlines()
    assert key.startswith("tdk_")
    assert len(key) > 40
    assert blank == ""
    snippet = "\n".join(toml_lines)
    assert tomllib.loads(snippet)["api_keys"] == [{"key": key, "scopes": ["publish"], "name": "ci"}]
    config = tmp_path / "tidings.toml"
    config.write_text(snippet + "\n")
    settings = load_settings(config)
    check_api_key(settings, f"Bearer {key}", "publish", "203.0.113.1")
    with pytest.raises(Forbidden):
        check_api_key(settings, f"Bearer {key}", "admin", "203.0.113.1")


def test_keys_are_random() -> None:
    first = runner.invoke(app, ["keys", "create"]).stdout.splitlines()[0]
    second = runner.invoke(app, ["keys", "create"]).stdout.splitlines()[0]
    assert first != second


def test_keys_create_refuses_unknown_scopes() -> None:
    result = runner.invoke(app, ["keys", "create", "--scopes", "publish,root"])
    assert result.exit_code == 2
    assert "publish, read, admin" in result.stderr


@pytest.mark.parametrize("command", [["token"], ["keys", "create"], ["keys"], []])
def test_every_command_has_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.stdout
