"""``tidings config check`` and ``tidings config show``, run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

from tidings.config_cli import check_file, mask_secrets


def tidings(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "tidings", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=30,
        check=False,
    )


def test_config_check_reports_all_three_mistakes_with_their_keys(tmp_path: Path):
    cfg = tmp_path / "tidings.toml"
    cfg.write_text('port = "eighty"\ncolour = "blue"\n[limits]\nidle_timeout = -5\n')
    result = tidings("config", "check", str(cfg))
    assert result.returncode == 1
    assert "3 problems" in result.stdout
    for key in ("port", "colour", "limits.idle_timeout"):
        assert f"  {key}: " in result.stdout, result.stdout
    assert "unknown key" in result.stdout


def test_config_check_reports_the_safe_bind_rule_together_with_other_mistakes(tmp_path: Path):
    cfg = tmp_path / "tidings.toml"
    cfg.write_text('host = "0.0.0.0"\nbroker = "kafka://x"\n[namespaces.chat]\nhistory_size = "many"\n')
    result = tidings("config", "check", str(cfg))
    assert result.returncode == 1
    for key in ("host", "broker", "namespaces.chat.history_size"):
        assert f"  {key}: " in result.stdout, result.stdout
    assert "not loopback" in result.stdout


def test_config_check_accepts_a_valid_file_and_ignores_the_environment(tmp_path: Path, monkeypatch):
    cfg = tmp_path / "tidings.toml"
    cfg.write_text('port = 9000\ntrusted_proxies = ["10.0.0.0/8"]\n[limits]\nidle_timeout = 30\n')
    monkeypatch.setenv("TIDINGS_PORT", "not a port")
    assert check_file(cfg) == []
    assert [key for key, _ in check_file(cfg, environment=True)] == ["port"]


def test_config_check_reports_invalid_toml_and_missing_files(tmp_path: Path):
    broken = tmp_path / "broken.toml"
    broken.write_text("port = = 1\n")
    assert "not valid TOML" in check_file(broken)[0][1]
    assert "no such file" in check_file(tmp_path / "absent.toml")[0][1]


def test_mask_secrets_masks_secret_names_and_url_passwords():
    masked = mask_secrets(
        {
            "api_key": "k" * 20,
            "auth": {"client_secret": "s"},
            "secret": ["a", "b"],
            "broker": "redis://u:pw@h:1/0",
            "port": 1,
            "api_keys": [{"key": "x" * 20, "name": "n"}],
        }
    )
    assert masked == {
        "api_key": "********",
        "auth": {"client_secret": "********"},
        "secret": ["********", "********"],
        "broker": "redis://u:********@h:1/0",
        "port": 1,
        "api_keys": [{"key": "********", "name": "n"}],
    }


SECRETS = {
    "api_key": "ak_" + "a" * 30,
    "token_secret": "ts_" + "b" * 30,
    "listed": "kk_" + "c" * 30,
    "receiver": "whsec_" + "d" * 30,
    "redis": "hunter2hunter2",
}


def secret_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "tidings.toml"
    cfg.write_text(
        f'api_key = "{SECRETS["api_key"]}"\n'
        f'broker = "redis://:{SECRETS["redis"]}@127.0.0.1:6379/0"\n'
        f'[[api_keys]]\nkey = "{SECRETS["listed"]}"\nscopes = ["publish"]\nname = "ci"\n'
        f'[receivers.github]\nprovider = "github"\nsecret = "{SECRETS["receiver"]}"\n'
        'channel = "github:{event}"\n'
    )
    return cfg


def test_config_show_prints_effective_settings_with_secrets_masked(tmp_path: Path):
    cfg = secret_config(tmp_path)
    env = {"TIDINGS_TOKEN_SECRET": SECRETS["token_secret"], "TIDINGS_PORT": "9123"}
    shown = tidings("config", "show", "--config", str(cfg), env=env)
    assert shown.returncode == 0, shown.stderr
    for secret in SECRETS.values():
        assert secret not in shown.stdout
    settings = tomllib.loads(shown.stdout)  # the TOML output parses
    assert settings["port"] == 9123  # the environment applies
    assert settings["api_key"] == settings["token_secret"] == "********"
    assert settings["api_keys"][0]["key"] == "********"
    assert settings["api_keys"][0]["name"] == "ci"
    assert settings["receivers"]["github"]["secret"] == "********"
    assert settings["broker"] == "redis://:********@127.0.0.1:6379/0"
    assert settings["limits"]["idle_timeout"] == 60
    as_json = tidings("config", "show", "--config", str(cfg), "--format", "json", env=env)
    assert json.loads(as_json.stdout)["token_secret"] == "********"
