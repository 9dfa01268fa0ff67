"""The admin console: live stats, history, publish, presence, and replaying a failed webhook."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from tests.browser.conftest import API_KEY, needs, screenshot
from tests.serving import RunningServer


def open_console(page_for: Callable[..., Any]) -> Any:
    page = page_for("/admin")
    page.fill("#key", API_KEY)
    page.click("#login button")
    page.wait_for_selector("#status[data-state='connected']")
    return page


def test_console_asks_for_the_key_when_the_server_has_one(page_for: Callable[..., Any]) -> None:
    page = page_for("/admin")
    page.wait_for_selector("#status:has-text('enter the admin API key')")


def test_console_publishes_and_browses_history_and_presence(page_for: Callable[..., Any]) -> None:
    chat = page_for("/chat")
    chat.fill("#nick", "operator-watch")
    chat.select_option("#room", "random")
    chat.click("#join button")
    chat.wait_for_selector("#text:enabled")

    page = open_console(page_for)
    page.wait_for_selector("#connections tr[data-transport='ws'] td:text-is('1')")
    page.fill("#publish-channel", "console:notes")
    page.fill("#publish-data", '{"text": "from the console"}')
    page.click("#publish-form button")
    page.wait_for_selector("#publish-result:has-text('published: offset 1')")
    row = page.wait_for_selector("#channels tr[data-channel='console:notes']")
    row.query_selector("button:text-is('History')").click()  # type: ignore[union-attr]
    page.wait_for_selector("#history td:has-text('from the console')")

    page.click("#channels tr[data-channel='chat:random'] button:text-is('Presence')")
    page.wait_for_selector("#presence li:has-text('(anonymous)')")
    screenshot(page, "admin.png", full_page=True)


class Receiver:
    """A webhook receiver on loopback that fails until told to succeed."""

    def __init__(self) -> None:
        self.fail = True
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.succeeded = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = 500 if receiver.fail else 200
                if status == 200:
                    receiver.received.append((dict(self.headers.items()), body))
                    receiver.succeeded.set()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.httpd.shutdown()
    running.httpd.server_close()


def test_console_replays_a_failed_webhook_delivery_which_then_succeeds(
    page_for: Callable[..., Any], server: RunningServer, receiver: Receiver
) -> None:
    needs(server, "/api/webhooks", "the webhooks")
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10) as api:
        endpoint = api.post(
            "/api/webhooks",
            json={"url": receiver.url, "channels": ["orders:*"], "description": "browser test"},
        ).json()
        api.post("/api/publish", json={"channel": "orders:eu", "data": {"order": 7}}).raise_for_status()

        page = open_console(page_for)
        page.click(f"#webhooks tr[data-endpoint='{endpoint['id']}'] button")
        failed = page.locator("#deliveries tr[data-status='failed']")
        failed.wait_for()
        # The last attempt's result (it showed "–": the listing's attempt log was always empty).
        assert failed.locator("td").nth(4).inner_text() == "500"
        receiver.fail = False
        failed.locator("button:text-is('Replay')").click()
        assert receiver.succeeded.wait(15)
        page.wait_for_selector("#deliveries tr[data-status='succeeded']")
        screenshot(page, "admin-webhooks.png", full_page=True)

        headers, body = receiver.received[0]
        Webhook(endpoint["secret"]).verify(body, {k.lower(): v for k, v in headers.items()})
        api.delete(f"/api/webhooks/{endpoint['id']}")
