"""tidings behind Debian's nginx, with the configuration of ``docs/howto/deploy.md``.

The test takes the ``nginx`` block of the how-to as it is, points it at a test node and a free
port, wraps it in a minimal main configuration in a temporary directory and runs
``nginx -p tmpdir -c nginx.conf -g 'daemon off;'``; every transport is then used through it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.ops.process import free_port
from tests.serving import RunningServer, serve
from tests.wsclient import WS

ROOT = Path(__file__).resolve().parents[2]
HOWTO = ROOT / "docs" / "howto" / "deploy.md"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
DEADLINE = 10.0
API_KEY = "nginx-test-key-" + "k" * 16
AUTH = {"Authorization": f"Bearer {API_KEY}"}

pytestmark = pytest.mark.skipif(
    not Path(NGINX).exists(), reason="needs Debian's nginx (apt-get install nginx)"
)


def howto_config() -> str:
    """The ``nginx`` code block of docs/howto/deploy.md."""
    blocks = re.findall(r"```nginx\n(.*?)```", HOWTO.read_text(), re.DOTALL)
    assert len(blocks) == 1, "docs/howto/deploy.md has exactly one nginx block"
    return blocks[0]


def nginx_conf(tmp: Path, listen: int, upstream: int) -> Path:
    site = howto_config()
    site = site.replace("listen 80;", f"listen 127.0.0.1:{listen};")
    site = site.replace("server 127.0.0.1:8600;", f"server 127.0.0.1:{upstream};")
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / name).mkdir(exist_ok=True)
    conf = tmp / "nginx.conf"
    # As root, nginx's workers would run as nobody, who cannot enter pytest's private temp dirs.
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(f"""
{user}
worker_processes 1;
error_log {tmp}/error.log warn;
pid {tmp}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{site}
}}
""")
    return conf


@pytest.fixture(scope="module")
def upstream() -> Iterator[RunningServer]:
    # Through a proxy the server API needs a key (loopback no longer means "this machine").
    with serve(trusted_proxies=["127.0.0.1/32"], api_key=API_KEY, access_log=True) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(upstream: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("nginx")
    port = free_port()
    conf = nginx_conf(tmp, port, upstream.port)
    check = subprocess.run(
        [NGINX, "-t", "-p", str(tmp), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen(
        [NGINX, "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + DEADLINE
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, (tmp / "error.log").read_text()
            assert time.monotonic() < deadline, "nginx did not come up"
            time.sleep(0.05)
        yield base
    finally:
        process.terminate()
        process.wait(10)


async def publish(base: str, channel: str, data: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=DEADLINE) as http:
        response = await http.post("/api/publish", json={"channel": channel, "data": data}, headers=AUTH)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_websocket_and_the_api_work_through_nginx(proxy: str):
    ws_url = proxy.replace("http://", "ws://") + "/ws"
    async with await WS.open(ws_url) as ws:
        reply = await ws.request("subscribe", channel="proxied")
        assert reply["op"] == "subscribed"
        sent = await publish(proxy, "proxied", {"n": 1})
        [message] = await ws.messages(1)
        assert message["offset"] == sent["offset"] and message["data"] == {"n": 1}
        pong = await ws.request("ping")
        assert pong["op"] == "pong"


async def test_x_forwarded_for_from_nginx_is_the_client_address(
    proxy: str,
    caplog: pytest.LogCaptureFixture,
):
    with caplog.at_level(logging.INFO, logger="tidings.access"):
        async with httpx.AsyncClient(base_url=proxy, timeout=DEADLINE) as http:
            response = await http.get("/api/channels", headers={"X-Forwarded-For": "203.0.113.7", **AUTH})
        assert response.status_code == 200
        rid = response.headers["x-request-id"]
        for _ in range(int(DEADLINE / 0.02)):  # the access line is written after the response
            if any(getattr(r, "fields", {}).get("path") == "/api/channels" for r in caplog.records):
                break
            await asyncio.sleep(0.02)
    [record] = [r for r in caplog.records if getattr(r, "fields", {}).get("path") == "/api/channels"]
    # nginx appended 127.0.0.1 (trusted); the address before it is the client's
    assert record.fields["client"] == "203.0.113.7"  # type: ignore[attr-defined]
    assert len(rid) == 32  # nginx's $request_id became tidings' request id


async def test_sse_streams_through_nginx_without_buffering(proxy: str):
    async with (
        httpx.AsyncClient(base_url=proxy, timeout=DEADLINE) as http,
        http.stream("GET", "/sse", params={"channel": "sse:proxied"}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.aiter_lines()
        seen: list[str] = []

        async def until(predicate: Any) -> None:
            async for line in lines:
                seen.append(line)
                if predicate(line):
                    return

        await asyncio.wait_for(until(lambda line: line.startswith("event: ready")), DEADLINE)
        assert seen[0].startswith("retry:")
        await publish(proxy, "sse:proxied", "through nginx")
        # unbuffered: the event arrives while the stream stays open
        await asyncio.wait_for(until(lambda line: "through nginx" in line), 3)


async def test_ndjson_streaming_through_nginx_without_buffering(proxy: str):
    async with (
        httpx.AsyncClient(base_url=proxy, timeout=DEADLINE) as http,
        http.stream("GET", "/stream", params={"channel": "nd:proxied"}) as response,
    ):
        assert response.status_code == 200
        lines = response.aiter_lines()
        first = orjson.loads(await asyncio.wait_for(anext(lines), DEADLINE))
        assert first["op"] == "ready"
        await publish(proxy, "nd:proxied", 42)

        async def next_publication() -> dict[str, Any]:
            async for line in lines:
                item: dict[str, Any] = orjson.loads(line)
                if item.get("data") == 42:
                    return item
            raise AssertionError("stream ended")

        item = await asyncio.wait_for(next_publication(), 3)
        assert item["channel"] == "nd:proxied" and item["cursor"]


async def test_long_poll_is_held_through_nginx_and_answered_by_a_publication(proxy: str):
    async with httpx.AsyncClient(base_url=proxy, timeout=DEADLINE) as http:
        short = await http.get("/poll", params={"channel": "lp:proxied", "timeout": 0})
        assert short.status_code == 200
        cursor = short.json()["cursor"]
        started = time.monotonic()
        held = asyncio.create_task(
            http.get("/poll", params={"channel": "lp:proxied", "cursor": cursor, "timeout": 5})
        )
        await asyncio.sleep(0.5)
        assert not held.done(), "the poll is held until data arrives"
        await publish(proxy, "lp:proxied", "wake up")
        answer = await asyncio.wait_for(held, DEADLINE)
    assert answer.status_code == 200
    assert [m["data"] for m in answer.json()["messages"]] == ["wake up"]
    assert time.monotonic() - started < 4


def test_the_howto_timeouts_outlast_long_polls_and_pings():
    from tidings.settings import Settings

    limits = Settings().limits
    timeouts = [float(t) for t in re.findall(r"proxy_read_timeout (\d+)s;", howto_config())]
    assert timeouts and min(timeouts) > max(limits.max_poll_timeout, limits.ping_interval)
