"""examples/proxy_fastapi/app.py and examples/proxy_django/app.py work: users log in with a
session cookie, tidings (mounted at /realtime) asks the application through its proxies, in
Chromium with tidings.js."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.proxy_backend import closed_port
from tests.serving import wait_started

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


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"{name}_app", ROOT / "examples" / name / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # Django finds its URLconf by module name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module", params=["proxy_fastapi", "proxy_django"])
def app_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "proxy_django":
        pytest.importorskip("django")
    port = closed_port()
    url = f"http://127.0.0.1:{port}"
    app = load_example(request.param).build_app(url)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    wait_started(server, thread)
    yield url
    server.should_exit = True
    thread.join(15)


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
