"""``tidings subscribe --transport sse|stream|longpoll|poll``: the CLI's HTTP subscribe loop."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.transports.conftest import LiveServer, run_server
from tests.transports.readers import TRANSPORTS, channel_name
from tidings.client.subscribe import run_subscribe as run_http_subscribe
from tidings.exceptions import BadRequest

SRC = str(Path(__file__).resolve().parents[2] / "src")


def publish_sync(url: str, channel: str, *values: Any) -> None:
    with httpx.Client(base_url=url) as client:
        for value in values:
            client.post("/api/publish", json={"channel": channel, "data": value}).raise_for_status()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_http_subscribe_resumes_from_a_cursor_and_reports_gaps(
    http_server: LiveServer, transport: str
) -> None:
    channel = channel_name("tiny")
    await asyncio.to_thread(publish_sync, http_server.url, channel, 1)
    async with httpx.AsyncClient(base_url=http_server.url) as client:
        first = await client.get("/poll", params={"channel": channel, "timeout": 0})
    cursor = first.json()["cursor"]
    await asyncio.to_thread(publish_sync, http_server.url, channel, 2, 3, 4, 5)
    got: list[Any] = []
    notices: list[Any] = []
    async with asyncio.timeout(15):
        await run_http_subscribe(
            http_server.url,
            [channel],
            transport=transport,
            cursor=cursor,
            token=None,
            count=3,
            emit=got.append,
            notice=notices.append,
            interval=0.05,
        )
    assert [p["data"] for p in got] == [3, 4, 5]
    assert [n["op"] for n in notices] == ["gap"]
    assert notices[0]["requested"] == 2


async def test_http_subscribe_refusal_raises_the_servers_error(http_server: LiveServer) -> None:
    with pytest.raises(BadRequest, match="channel"):
        await run_http_subscribe(
            http_server.url,
            ["bad name"],
            transport="sse",
            cursor=None,
            token=None,
            count=1,
            emit=print,
            notice=print,
        )


def test_cli_subscribe_prints_publications_as_ndjson(http_server: LiveServer) -> None:
    channel = channel_name()
    env = {**os.environ, "PYTHONPATH": SRC, "TIDINGS_URL": http_server.url}
    with subprocess.Popen(
        [sys.executable, "-m", "tidings", "subscribe", channel, "--transport", "stream", "--count", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        deadline = time.monotonic() + 15
        while http_server.node.hub.subscriber_count(channel) == 0:  # wait for it to be live
            assert time.monotonic() < deadline, "the CLI never subscribed"
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.01)
        publish_sync(http_server.url, channel, "one", "two")
        out, err = proc.communicate(timeout=15)
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert [line["data"] for line in lines] == ["one", "two"], err
    assert all(line["cursor"] for line in lines)


@pytest.mark.parametrize("transport", ["sse", "stream"])
async def test_http_subscribe_resumes_by_itself_when_the_server_ends_the_stream(transport: str) -> None:
    channel = channel_name()
    got: list[Any] = []
    notices: list[Any] = []
    with run_server(sse={"max_duration": 0.3, "retry_ms": 50}) as short_lived:
        subscriber = asyncio.ensure_future(
            run_http_subscribe(
                short_lived.url,
                [channel],
                transport=transport,
                cursor=None,
                token=None,
                count=8,
                emit=got.append,
                notice=notices.append,
            )
        )
        deadline = time.monotonic() + 10
        while short_lived.node.hub.subscriber_count(channel) == 0:  # live: nothing is missed
            assert time.monotonic() < deadline, "never subscribed"
            await asyncio.sleep(0.01)
        for n in range(8):  # paced over ~1 s: the server ends the stream several times meanwhile
            await asyncio.to_thread(publish_sync, short_lived.url, channel, n)
            await asyncio.sleep(0.12)
        async with asyncio.timeout(15):
            await subscriber
    assert [p["data"] for p in got] == list(range(8))
