"""Delta updates applied by the npm package ``fossil-delta`` (what Centrifugo's JavaScript clients
use) in Node, from a real server on both engines over WebSocket and NDJSON; and the two encoders
cross-checked: deltas made by tidings applied by ``fossil-delta``, and the reverse.

``fossil-delta`` is installed from npm into ``.cache/node`` (skipped without npm or node).
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.engines.test_delta import NAMESPACES, ticker
from tests.serving import RunningServer, serve
from tests.transports.readers import channel_name, publish
from tidings.core.fossil import apply, create

ROOT = Path(__file__).resolve().parents[2]
PREFIX = ROOT / ".cache" / "node"
FOSSIL = PREFIX / "node_modules" / "fossil-delta" / "fossil-delta.js"
SCRIPT = Path(__file__).parent / "js" / "apply_deltas.mjs"
DEADLINE = 30.0
FOSSIL_SPEC = "fossil-delta@2"


@pytest.fixture(scope="module")
def fossil_delta() -> Path:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    if not FOSSIL.exists():
        if shutil.which("npm") is None:
            pytest.skip("npm is not installed: cannot fetch fossil-delta")
        result = subprocess.run(
            ["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(PREFIX), FOSSIL_SPEC],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if result.returncode != 0:
            pytest.skip(f"fossil-delta could not be installed from npm: {result.stderr[-300:]}")
    return FOSSIL


@pytest.fixture(scope="module", params=["sockets", "asgi"])
def server(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    with serve(engine=request.param, namespaces=NAMESPACES) as running:
        yield running


@pytest.mark.parametrize("transport", ["ws", "stream"])
async def test_node_applies_the_deltas_with_npm_fossil_delta(
    server: RunningServer, fossil_delta: Path, transport: str
) -> None:
    channel = channel_name("live")
    values = [ticker(i) for i in range(8)]
    node = await asyncio.create_subprocess_exec(
        "node",
        "--experimental-websocket",
        "--no-warnings",
        str(SCRIPT),
        fossil_delta.as_uri(),
        server.url,
        channel,
        str(len(values)),
        transport,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert node.stdout is not None
    try:
        async with asyncio.timeout(DEADLINE):
            assert (await node.stdout.readline()).strip() == b"ready"
            async with httpx.AsyncClient(base_url=server.url) as http:
                await publish(http, channel, *values)
            lines = [json.loads(await node.stdout.readline()) for _ in values]
            assert await node.wait() == 0
    finally:
        if node.returncode is None:
            node.kill()
            await node.wait()
    assert [line["offset"] for line in lines] == list(range(1, 9))
    assert [line["data"] for line in lines] == values
    assert [line["delta"] for line in lines] == [False, *[True] * 7]


def test_encoders_cross_check(fossil_delta: Path) -> None:
    """200 pairs of similar texts: tidings' deltas applied by fossil-delta, fossil-delta's by
    tidings (so either side can be the server of the other)."""
    rnd = random.Random(19)
    pairs = []
    for _ in range(200):
        source = bytes(rnd.choice(b'abcdefgh{}":,0123\xc3\xa9') for _ in range(rnd.randint(0, 600)))
        target = bytearray(source)
        for _ in range(rnd.randint(0, 6)):
            at = rnd.randint(0, len(target))
            insert = bytes(rnd.choice(b"xyz") for _ in range(rnd.randint(0, 12)))
            target[at : at + rnd.randint(0, 30)] = insert
        pairs.append((source, bytes(target)))
    cases = [[s.hex(), t.hex(), create(s, t).hex()] for s, t in pairs]
    script = (
        "import { readFileSync } from 'node:fs';"
        "const { applyDelta, createDelta } = await import(process.argv[1]);"
        "const cases = JSON.parse(readFileSync(0, 'utf8'));"
        "const hex = (b) => Buffer.from(b).toString('hex');"
        "const out = cases.map(([s, t, d]) => {"
        "  const src = Buffer.from(s, 'hex');"
        "  const theirs = createDelta(src, Buffer.from(t, 'hex'));"
        "  return [hex(applyDelta(src, Buffer.from(d, 'hex'))), hex(theirs)];"
        "});"
        "console.log(JSON.stringify(out));"
    )
    result = subprocess.run(
        ["node", "--input-type=module", "-e", script, fossil_delta.as_uri()],
        input=orjson.dumps(cases).decode(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for (source, target), (applied, theirs) in zip(pairs, json.loads(result.stdout), strict=True):
        assert bytes.fromhex(applied) == target
        assert apply(source, bytes.fromhex(theirs)) == target
