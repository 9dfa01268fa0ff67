"""Browser tests: the demo pages and the console in Debian's Chromium, driven by Playwright.

One server (real uvicorn on loopback, demo pages on, an admin API key) and one browser serve the
whole package; every test gets fresh browser contexts. The ``page_for`` fixture opens pages
that record console errors, failed requests and every URL requested, and the test's teardown
checks them: no console error, no failed request, nothing fetched from another origin.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serving import RunningServer, serve

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
API_KEY = "browser-tests-admin-key-0123456789"
TIMEOUT_MS = 15_000
# README's screenshots are refreshed only on request (TIDINGS_SCREENSHOTS=1 make test), so that a
# test run leaves the tree clean; otherwise they go to a scratch directory, still taken (a page
# that cannot be rendered fails the test either way).
SCREENSHOTS = (
    Path(__file__).resolve().parents[2] / "docs" / "img"
    if os.environ.get("TIDINGS_SCREENSHOTS") == "1"
    else Path(tempfile.gettempdir()) / "tidings-screenshots"
)

if not os.path.exists(CHROMIUM):
    pytest.skip(f"needs Debian's Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/browser" in str(item.fspath):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="package")
def server() -> Iterator[RunningServer]:
    with (
        tempfile.TemporaryDirectory() as tmp,
        serve(
            api_key=API_KEY,
            webhooks={
                "allow_private": ["127.0.0.0/8"],
                "retry_schedule": [0.05],
                "store": str(Path(tmp) / "webhooks.db"),
            },
        ) as running,
    ):
        yield running


def serves(server: RunningServer, path: str, method: str = "GET") -> bool:
    """Whether the server answers ``path`` with anything but 404."""
    with (
        httpx.Client(timeout=5) as client,
        client.stream(
            method, f"{server.url}{path}", headers={"Authorization": f"Bearer {API_KEY}"}
        ) as answer,
    ):
        return answer.status_code != 404


def needs(server: RunningServer, path: str, why: str, method: str = "GET") -> None:
    """Fail at once, with a clear message, if ``path`` is not served (404)."""
    assert serves(server, path, method), f"{path.split('?')[0]} ({why}) is not served (404)"


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    # Package scope, not session: while Playwright's sync API is open, the main thread counts as
    # running an event loop, and the asyncio tests elsewhere in the suite could not start theirs.
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield browser
        browser.close()


@dataclass
class Watched:
    """What a page did that a test must not tolerate."""

    origin: str
    errors: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> Any:
        page.set_default_timeout(TIMEOUT_MS)
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        page.on("request", self._request)
        page.on("requestfailed", self._failed)
        page.on("response", lambda r: r.status >= 400 and self.failed.append(f"{r.status} {r.url}"))
        return page

    def _request(self, request: Any) -> None:
        url = request.url
        if not (url.startswith(self.origin) or url.startswith(("data:", "about:"))):
            self.foreign.append(url)

    def _failed(self, request: Any) -> None:
        # Our own aborts (a stream closed on purpose, a page left) are not failures.
        if request.failure not in ("net::ERR_ABORTED",):
            self.failed.append(f"{request.failure} {request.url}")

    def expect_refusal(self, status: int, url_part: str) -> None:
        """Take back what a refusal the test provoked left: the failed response and Chromium's
        console line for it (a page cannot silence that line). Fails if there was none."""
        mine = [f for f in self.failed if f.startswith(f"{status} ") and url_part in f]
        assert mine, f"no {status} for {url_part} in {self.failed}"
        self.failed = [f for f in self.failed if f not in mine]
        line = f"the server responded with a status of {status}"
        self.errors = [e for e in self.errors if line not in e]

    def check(self) -> None:
        assert self.errors == [], f"console errors: {self.errors}"
        assert self.failed == [], f"failed requests: {self.failed}"
        assert self.foreign == [], f"requests to other origins: {self.foreign}"


@pytest.fixture
def page_for(browser: Any, server: RunningServer) -> Iterator[Callable[..., Any]]:
    """``page_for(path, **context_options)``: a new context's page at ``path``, watched."""
    watched = Watched(server.url)
    contexts: list[Any] = []

    def open_page(path: str, **options: Any) -> Any:
        options.setdefault("viewport", {"width": 1280, "height": 860})
        context = browser.new_context(base_url=server.url, **options)
        contexts.append(context)
        page = watched.attach(context.new_page())
        page.goto(path)
        return page

    open_page.watched = watched  # type: ignore[attr-defined]
    yield open_page
    try:
        watched.check()
    finally:
        for context in contexts:
            context.close()


def screenshot(page: Any, name: str, *, full_page: bool = False) -> None:
    """Save ``<name>`` into :data:`SCREENSHOTS` (``docs/img``, which README shows, on request)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(SCREENSHOTS / name), full_page=full_page)
