"""The command line, run as a user would: a real process against a real server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.serving import RunningServer

COMMANDS = [
    "serve",
    "publish",
    "subscribe",
    "history",
    "presence",
    "token",
    "keys",
    "keys create",
    "webhooks",
    "webhooks add",
    "webhooks list",
    "webhooks show",
    "webhooks deliveries",
    "webhooks replay",
    "webhooks rotate",
    "webhooks test",
    "webhooks apps",
    "webhooks apps create",
    "webhooks apps add-endpoint",
    "webhooks event-types",
    "webhooks event-types create",
    "webhooks send",
    "webhooks portal",
    "listen",
    "consumers",
    "consumers init",
    "consumers status",
]


def tidings(
    *args: str,
    url: str | None = None,
    input: str | None = None,
    timeout: float = 30,
    columns: int | None = None,
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if url:
        env["TIDINGS_URL"] = url
    if columns:
        env["COLUMNS"] = str(columns)
    return subprocess.run(
        [sys.executable, "-m", "tidings", *args],
        capture_output=True,
        text=True,
        env=env,
        input=input,
        timeout=timeout,
        check=False,
    )


def test_version():
    result = tidings("--version")
    assert result.returncode == 0 and result.stdout.startswith("tidings ")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str):
    result = tidings(*command.split(), "--help", columns=200)
    assert result.returncode == 0 and "Usage" in result.stdout
    # rich takes "[…]" in a help text for markup and drops it, leaving "Port ." behind.
    assert not re.search(r"\w \.(\s|$)", result.stdout), result.stdout


def test_serve_help_shows_the_defaults():
    shown = tidings("serve", "--help", columns=200).stdout
    assert "Address to bind (default 127.0.0.1)." in shown
    assert "Port (default 8600; 0 = any free)." in shown
    assert "memory (default)" in shown


def test_publish_history_and_subscribe_round_trip(server: RunningServer):
    published = tidings("publish", "cli:news", '{"n": 1}', url=server.url)
    assert published.returncode == 0, published.stderr
    assert json.loads(published.stdout)["offset"] == 1
    assert tidings("publish", "cli:news", "plain text", url=server.url).returncode == 0
    lines = tidings("publish", "cli:news", "-", url=server.url, input='{"n": 3}\n"four"\n')
    assert [json.loads(x)["offset"] for x in lines.stdout.splitlines()] == [3, 4]
    history = tidings("history", "cli:news", url=server.url)
    assert [json.loads(x)["data"] for x in history.stdout.splitlines()] == [
        {"n": 1},
        "plain text",
        {"n": 3},
        "four",
    ]
    cursor = json.loads(history.stdout.splitlines()[0])
    sub = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tidings",
            "subscribe",
            "cli:news",
            "--count",
            "3",
            "--url",
            server.url,
            "--cursor",
            _cursor_after(cursor),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = sub.communicate(timeout=30)
    assert sub.returncode == 0, err
    assert [json.loads(x)["offset"] for x in out.splitlines()] == [2, 3, 4]


def _cursor_after(pub: dict[str, object]) -> str:
    from tidings.core.cursor import encode_cursor
    from tidings.core.position import Position

    return encode_cursor({str(pub["channel"]): Position(str(pub["epoch"]), int(str(pub["offset"])))})


def test_client_commands_explain_an_unreachable_server():
    result = tidings("publish", "x", "1", url="http://127.0.0.1:9")
    assert result.returncode == 2
    assert "cannot reach" in result.stderr and "tidings serve" in result.stderr


def test_serve_reports_bad_settings_by_key(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('port = "x"\n[limits]\nidle_timeout = -1\n[namespaces.chat]\nhistory_size = "many"\n')
    result = tidings("serve", "--config", str(cfg))
    assert result.returncode == 2
    for key in ("port", "limits.idle_timeout", "namespaces.chat.history_size"):
        assert key in result.stderr
