"""examples/proxy_fastapi/app.py and examples/proxy_django/app.py work: users log in with a
session cookie, tidings (mounted at /realtime) asks the application through its proxies, in
Chromium with tidings.js."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.proxy_backend import closed_port

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
]
TIMEOUT_MS = 15_000
HAS_CHROMIUM = os.path.exists(CHROMIUM)


# Each example runs in a process of its own, as it would be deployed: Django's settings are
# per process, and tests/consumers configures Django for the outbox helpers in this one.
RUNNER = """
import importlib.util, sys
import uvicorn
path, url, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
spec = importlib.util.spec_from_file_location("example_app", path)
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module  # Django finds its URLconf by module name
spec.loader.exec_module(module)
uvicorn.run(module.build_app(url), host="127.0.0.1", port=port, log_level="warning")
"""


@pytest.fixture(scope="module", params=["proxy_fastapi", "proxy_django"])
def app_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "proxy_django":
        pytest.importorskip("django")
    port = closed_port()
    url = f"http://127.0.0.1:{port}"
    path = ROOT / "examples" / request.param / "app.py"
    process = subprocess.Popen([sys.executable, "-c", RUNNER, str(path), url, str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"{request.param} exited with {process.returncode}"
            try:
                httpx.get(url + "/realtime/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, f"{request.param} never answered"
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(15)


async def test_without_a_session_the_websocket_is_refused(app_url: str) -> None:
    ws_url = app_url.replace("http", "ws") + "/realtime/ws"
    async with connect(ws_url, additional_headers={"Cookie": "session=forged"}) as ws:
        await ws.send('{"op":"connect","ref":1}')
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(10):
                await ws.recv()
    assert (ws.close_code, ws.close_reason) == (4003, "log in first")


@pytest.mark.browser
async def test_members_chat_and_the_proxies_decide(app_url: str) -> None:
    if not HAS_CHROMIUM:
        pytest.skip("needs Debian's Chromium")
    async_api = pytest.importorskip("playwright.async_api")
    async with async_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            pages = {}
            for user, password in (("alice", "wonderland"), ("bob", "builder")):
                context = await browser.new_context()
                page = pages[user] = await context.new_page()
                page.set_default_timeout(TIMEOUT_MS)
                await page.goto(app_url)
                await page.fill("#user", user)
                await page.fill("#password", password)
                await page.click("#login")
                await page.wait_for_selector("#state:text-is('connected')")
            alice, bob = pages["alice"], pages["bob"]
            await alice.wait_for_selector("#staff:text-is('a member')")
            await bob.wait_for_selector("#staff:text-is('refused: you are not a member of this room')")
            await bob.fill("#text", "hello from bob")
            await bob.press("#text", "Enter")
            # the publish proxy stamped the author from the session, not from what the page sent
            for page in (alice, bob):
                await page.wait_for_selector("#lobby li:text-is('bob: hello from bob')")
            await alice.fill("#text", "hi bob")
            await alice.press("#text", "Enter")
            await bob.wait_for_selector("#lobby li:text-is('alice: hi bob')")
        finally:
            await browser.close()
