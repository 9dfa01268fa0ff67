"""Every page loads clean, is usable by keyboard and screen reader basics, light and dark."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.browser.conftest import needs, serves
from tests.serving import RunningServer

SSE, STREAM, POLL = "/sse?channel=x", "/stream?channel=x", "/poll?channel=x&timeout=0"

# page -> (a selector that shows the page is working, the endpoints it needs beyond /ws)
PAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "/": ("a[href='lab']", ()),
    "/chat": ("#nick", ()),
    "/ticker": ("[data-symbol][data-updates]", (SSE,)),
    "/progress": ("#start:enabled", ()),
    "/logs": ("#tail span", (STREAM,)),
    "/webhooks": ("#status[data-state='connected']", ()),
    "/lab": ("td[data-transport='poll']", (SSE, STREAM, POLL)),
    "/admin": ("#status[data-state='connected']", ()),
}

# Labels, landmarks and names, checked in the page.
A11Y = """() => {
  const problems = [];
  if (!document.documentElement.lang) problems.push("no lang");
  if (!document.querySelector("main")) problems.push("no main landmark");
  if (document.querySelectorAll("h1").length !== 1) problems.push("not exactly one h1");
  for (const el of document.querySelectorAll("input, select, textarea")) {
    const labelled = (el.labels && el.labels.length) || el.getAttribute("aria-label");
    if (!labelled) problems.push(`unlabelled ${el.id || el.outerHTML}`);
  }
  for (const el of document.querySelectorAll("button, a[href]")) {
    if (!(el.textContent.trim() || el.getAttribute("aria-label"))) problems.push(`nameless ${el.outerHTML}`);
  }
  return problems;
}"""


@pytest.mark.parametrize("path", list(PAGES))
def test_page_loads_without_errors_failed_or_foreign_requests(
    path: str, page_for: Callable[..., Any], server: RunningServer
) -> None:
    ready, endpoints = PAGES[path]
    for endpoint in endpoints:
        needs(server, endpoint, "the HTTP transports")
    page = page_for(path)
    if path == "/admin":
        page.fill("#key", "browser-tests-admin-key-0123456789")
        page.click("#login button")
    page.wait_for_selector(ready)
    assert page.evaluate(A11Y) == []


def test_pages_follow_the_color_scheme(page_for: Callable[..., Any]) -> None:
    background = "() => getComputedStyle(document.body).backgroundColor"
    light = page_for("/", color_scheme="light").evaluate(background)
    dark = page_for("/", color_scheme="dark").evaluate(background)
    assert light == "rgb(247, 247, 248)"
    assert dark == "rgb(21, 23, 26)"


def test_pages_fit_a_phone_screen(page_for: Callable[..., Any], server: RunningServer) -> None:
    page = page_for("/", viewport={"width": 375, "height": 740})
    for path, (ready, endpoints) in PAGES.items():
        if any(not serves(server, endpoint) for endpoint in endpoints):
            continue
        page.goto(path)
        page.wait_for_selector("#key" if path == "/admin" else ready)
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} is {overflow} px wider than a phone"
