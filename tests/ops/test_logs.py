"""Logs of a real ``tidings serve``: JSON lines, request ids, connection lines, no secrets."""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.ops.process import free_port, running
from tests.wsclient import WS
from tidings.logs import configure_logging, redact
from tidings.settings import Settings

API_KEY = "apikey-" + "k" * 24
TOKEN_SECRET = "tokensecret-" + "s" * 24


def records(output: str) -> list[dict[str, Any]]:
    lines = [line for line in output.splitlines() if line.strip()]
    parsed = []
    for line in lines:
        parsed.append(json.loads(line))  # every line is JSON: uvicorn's too
    return parsed


async def test_json_logs_carry_request_ids_and_connection_lines_and_never_secrets(
    tmp_path: Path,
):
    cfg = tmp_path / "tidings.toml"
    cfg.write_text(
        f'log_format = "json"\naccess_log = true\napi_key = "{API_KEY}"\ntoken_secret = "{TOKEN_SECRET}"\n'
    )
    token = jwt.encode({"sub": "alice", "exp": int(time.time()) + 600}, TOKEN_SECRET, algorithm="HS256")
    with running(cfg, free_port(), tmp_path / "server.log") as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            info = await http.get(
                "/api/info", headers={"Authorization": f"Bearer {API_KEY}", "X-Request-ID": "req-123"}
            )
            assert info.status_code == 200
            assert info.headers["x-request-id"] == "req-123"
            fresh = await http.get(
                "/api/info", params={"token": token}, headers={"X-Request-ID": "no spaces allowed"}
            )
            assert len(fresh.headers["x-request-id"]) == 32  # a new id replaced the insane one
        async with await WS.open(
            f"{server.ws_url}?token={token}", additional_headers={"X-Request-ID": "ws-42"}
        ) as ws:
            assert ws.conn.response is not None
            assert ws.conn.response.headers["x-request-id"] == "ws-42"
            assert (await ws.request("subscribe", channel="logged"))["op"] == "subscribed"
        server.terminate()
        server.wait(15)
        output = server.output()
    for secret in (API_KEY, TOKEN_SECRET, token):
        assert secret not in output
    logged = records(output)
    access = [r for r in logged if r["logger"] == "tidings.access"]
    first = next(r for r in access if r.get("request_id") == "req-123")
    assert first["path"] == "/api/info" and first["status"] == 200 and "duration_ms" in first
    masked = next(r for r in access if r["request_id"] == fresh.headers["x-request-id"])
    assert masked["path"] == "/api/info?token=***"
    opened = next(r for r in logged if r.get("event") == "open")
    assert opened["request_id"] == "ws-42"
    closed = next(r for r in logged if r.get("event") == "close")
    assert opened["transport"] == closed["transport"] == "ws"
    assert opened["user"] == closed["user"] == "alice"
    assert opened["client"] == closed["client"] and closed["address"] == "127.0.0.1"
    assert closed["code"] == 1000 and closed["by"] == "client" and closed["duration_s"] >= 0
    assert any(r["logger"] == "tidings.server" and "drain" in r["message"] for r in logged)


@pytest.mark.parametrize("engine", ["fast", "uvicorn"])
async def test_the_defaults_write_no_line_per_request_or_poll(tmp_path: Path, engine: str):
    # A line per request halved a long-polling node's capacity at the default level: the
    # access lines (and a poll's connection lines) are opt-in (access_log = true, above).
    cfg = tmp_path / "tidings.toml"
    cfg.write_text(f'[server]\nengine = "{engine}"\n')  # nothing else: the defaults
    with running(cfg, free_port(), tmp_path / "server.log") as server:
        async with httpx.AsyncClient(base_url=server.url) as http:
            for _ in range(3):
                assert (await http.get("/api/info")).status_code == 200
                short = await http.get("/poll", params={"channel": "quiet", "timeout": 0})
                assert short.status_code == 200
                long = await http.get("/poll", params={"channel": "quiet", "timeout": 0.05})
                assert long.status_code == 200
        async with await WS.open(server.ws_url) as ws:  # a WebSocket's lines stay
            assert (await ws.request("subscribe", channel="quiet"))["op"] == "subscribed"
        server.terminate()
        server.wait(15)
        output = server.output()
    assert "drain" in output  # the log was written
    assert "open transport=ws" in output and "close transport=ws" in output
    for per_request in ("/api/info", "/poll", "transport=longpoll", "transport=poll"):
        assert per_request not in output, output


def test_redact_masks_tokens_keys_and_authorization_headers():
    jwt_like = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl"
    text = (
        f'GET /sse?channel=a&token={jwt_like}&x=1 "Authorization: Bearer abc.def" '
        f"headers=[(b'authorization', b'Bearer zzz')] api_key=sekrit whsec_abcdef "
        f"{jwt_like} my-secret-value"
    )
    out = redact(text, ["my-secret-value"])
    for leaked in (jwt_like, "abc.def", "zzz", "sekrit", "abcdef", "my-secret-value"):
        assert leaked not in out
    assert "channel=a" in out and "x=1" in out and "token=***" in out


@pytest.mark.parametrize(("level", "httpx_level"), [("info", "WARNING"), ("debug", "DEBUG")])
def test_httpx_request_lines_stay_below_info_unless_debugging(level: str, httpx_level: str):
    """httpx logs every request at INFO; a node that proxies each connect to the application
    would write a line per connection at the default level."""
    out = io.StringIO()
    handler = configure_logging(Settings(log_level=level), stream=out)
    try:
        assert logging.getLevelName(logging.getLogger("httpx").getEffectiveLevel()) == httpx_level
        logging.getLogger("httpx").info('HTTP Request: POST http://app/connect "HTTP/1.1 200 OK"')
        assert ("HTTP Request" in out.getvalue()) is (level == "debug")
    finally:
        logging.getLogger().removeHandler(handler)
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.NOTSET)
