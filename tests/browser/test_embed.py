"""The pages work when tidings is mounted under a path in a host ASGI app."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from tests.browser.conftest import Watched
from tests.serving import wait_started
from tidings.server.app import create_app
from tidings.settings import load_settings


@pytest.fixture
def host_url() -> Iterator[str]:
    realtime = create_app(load_settings(port=0))
    host = Starlette(routes=[Mount("/realtime", app=realtime)], lifespan=realtime.lifespan)
    server = uvicorn.Server(uvicorn.Config(host, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    wait_started(server, thread)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(15)


def test_chat_works_mounted_under_a_path(browser: Any, host_url: str) -> None:
    context = browser.new_context()
    watched = Watched(host_url)
    try:
        page = watched.attach(context.new_page())
        page.goto(f"{host_url}/realtime/chat")
        page.fill("#nick", "mounted")
        page.click("#join button")
        page.wait_for_selector("#people li:text-is('mounted')")
        page.fill("#text", "under /realtime")
        page.press("#text", "Enter")
        page.wait_for_selector("#messages li:text-is('mounted: under /realtime')")
        page.click("a.brand")
        page.wait_for_url(f"{host_url}/realtime/")
        watched.check()
    finally:
        context.close()
