"""The webhook portal (``/portal#token=…``) in Chromium: a customer manages its own endpoints,
sends a test event to a real receiver, sees the attempt, replays it, rotates the secret; another
app's token shows none of it; an expired link says so."""

from __future__ import annotations

import http.server
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from tests.browser.conftest import API_KEY, screenshot
from tests.browser.test_admin import open_console
from tests.serving import RunningServer

ADMIN = {"Authorization": f"Bearer {API_KEY}"}


class Receiver:
    """A webhook receiver on loopback that answers 200 and keeps what it got."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.arrived:
                    receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    receiver.arrived.notify_all()
                self.send_response(200)
                self.send_header("content-length", "8")
                self.end_headers()
                self.wfile.write(b"received")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, count: int, within: float = 15) -> tuple[dict[str, str], bytes]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.received) >= count, within), (
                f"the receiver got {len(self.received)} requests, not {count}"
            )
            return self.received[count - 1]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.server.shutdown()
    made.server.server_close()


def admin(server: RunningServer, method: str, path: str, **kw: Any) -> Any:
    answer = httpx.request(method, f"{server.url}/api/webhooks{path}", headers=ADMIN, timeout=10, **kw)
    assert answer.status_code < 300, answer.text
    return answer.json() if answer.content else None


def new_app(server: RunningServer, name: str) -> str:
    app_id = f"{name.lower()}-{uuid.uuid4().hex[:8]}"
    admin(server, "POST", "/apps", json={"id": app_id, "name": name})
    return app_id


def portal_url(server: RunningServer, app_id: str, **body: Any) -> str:
    answer = admin(server, "POST", f"/apps/{app_id}/portal", json=body)
    url: str = answer["url"]
    assert url.startswith(server.url + "/portal#token=tdp_")
    return url.removeprefix(server.url)


def row_of(page: Any, url: str) -> Any:
    return page.locator("#endpoints tbody tr", has_text=url)


def test_a_customer_adds_an_endpoint_tests_it_replays_and_rotates_the_secret(
    page_for: Callable[..., Any], server: RunningServer, receiver: Receiver
) -> None:
    app_id = new_app(server, "Acme")
    kind = f"invoice.paid.{uuid.uuid4().hex[:6]}"
    admin(server, "POST", "/event-types", json={"name": kind, "description": "An invoice was paid"})
    page = page_for(portal_url(server, app_id))
    page.wait_for_selector("#title:text-is('Webhooks of Acme')")
    assert "token" not in page.url  # taken out of the address bar at once

    page.fill("#add-url", receiver.url)
    page.fill("#add-description", "billing")
    page.check(f"#add-types input[value='{kind}']")
    page.click("#add-form button[type=submit]")
    row = row_of(page, receiver.url)
    row.wait_for()
    assert kind in row.inner_text()
    secret = page.inner_text("#secret")
    assert secret.startswith("whsec_")

    # a test event
    row.get_by_role("button", name=f"Send a test event to {receiver.url}").click()
    headers, body = receiver.wait(1)
    sent = Webhook(secret).verify(body, headers)
    assert sent["type"] == "webhook.test"
    done = page.locator("#attempts tbody tr[data-status='succeeded']")
    done.wait_for()
    done.get_by_role("button", name=f"Request and responses of {headers['webhook-id']}").click()
    page.wait_for_selector("#detail-request:has-text('webhook.test')")
    page.wait_for_selector("#detail-attempts li[data-status='200']:has-text('received')")
    assert headers["webhook-id"] in page.inner_text("#detail-request")
    screenshot(page, "portal.png", full_page=True)

    # replayed with the same webhook-id
    done.get_by_role("button", name=f"Replay {headers['webhook-id']}").click()
    again, _ = receiver.wait(2)
    assert again["webhook-id"] == headers["webhook-id"]
    page.wait_for_selector("#detail-attempts li:nth-child(2)")

    # a new secret signs from now on
    row.get_by_role("button", name=f"Rotate the secret of {receiver.url}").click()
    page.wait_for_function("old => document.getElementById('secret').textContent !== old", arg=secret)
    rotated = page.inner_text("#secret")
    row.get_by_role("button", name=f"Send a test event to {receiver.url}").click()
    headers, body = receiver.wait(3)
    Webhook(rotated).verify(body, headers)

    # edit, disable, delete
    row.get_by_role("button", name=f"Edit {receiver.url}").click()
    page.fill("#edit-description", "billing and refunds")
    page.uncheck(f"#edit-types input[value='{kind}']")
    page.click("#edit-form button[type=submit]")
    page.wait_for_selector("#notice:has-text('Endpoint saved')")
    assert row.locator("td").nth(1).inner_text() == "all"
    row.get_by_role("button", name=f"Disable {receiver.url}").click()
    page.wait_for_selector("#endpoints td.bad:has-text('disabled')")
    page.on("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name=f"Delete {receiver.url}").click()
    page.wait_for_selector("#no-endpoints:visible")
    assert admin(server, "GET", f"/apps/{app_id}/endpoints")["endpoints"] == []


def test_another_apps_token_shows_none_of_this_apps_data(
    page_for: Callable[..., Any], server: RunningServer, receiver: Receiver
) -> None:
    acme = new_app(server, "Acme")
    secret_url = f"{receiver.url}/acme-only-{uuid.uuid4().hex[:6]}"
    made = admin(server, "POST", f"/apps/{acme}/endpoints", json={"url": secret_url, "description": "acme's"})
    admin(server, "POST", f"/apps/{acme}/endpoints/{made['id']}/test")
    receiver.wait(1)
    globex = new_app(server, "Globex")

    page = page_for(portal_url(server, globex))
    page.wait_for_selector("#title:text-is('Webhooks of Globex')")
    page.wait_for_selector("#no-endpoints:visible")
    text = page.inner_text("body")
    assert "Acme" not in text and secret_url not in text and made["id"] not in text
    assert page.locator("#endpoints tbody tr").count() == 0
    # nor can its token reach the other app's endpoints
    token = page.evaluate("() => sessionStorage.getItem('tidings-portal-token')")
    answer = page.request.get(
        f"/api/webhooks/apps/{acme}/endpoints", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status == 403


def test_an_expired_link_says_so_and_shows_nothing(
    page_for: Callable[..., Any], server: RunningServer
) -> None:
    app_id = new_app(server, "Acme")
    admin(server, "POST", f"/apps/{app_id}/endpoints", json={"url": "http://127.0.0.1:9/private-url"})
    link = portal_url(server, app_id, expiry=1)
    time.sleep(1.2)  # the token's own clock: nothing to wait on but time
    page = page_for(link)
    page.wait_for_selector("#gate:has-text('This portal link has expired')")
    assert page.locator("#portal").is_hidden()
    assert "private-url" not in page.inner_text("body")


def test_a_page_without_a_link_explains_where_links_come_from(page_for: Callable[..., Any]) -> None:
    page = page_for("/portal")
    page.wait_for_selector("#gate:has-text('portal link')")


def test_the_console_creates_apps_and_event_types_and_hands_out_portal_links(
    page_for: Callable[..., Any], server: RunningServer
) -> None:
    console = open_console(page_for)
    app_id = f"console-{uuid.uuid4().hex[:8]}"
    console.wait_for_selector("#apps-section:visible")
    console.fill("#app-name", "Initech")
    console.fill("#app-id", app_id)
    console.click("#app-form button[type=submit]")
    row = console.locator(f"#apps tr[data-app='{app_id}']")
    row.wait_for()
    kind = f"report.ready.{uuid.uuid4().hex[:6]}"
    console.fill("#event-type-name", kind)
    console.fill("#event-type-schema", '{"type": "object"}')
    console.click("#event-type-form button[type=submit]")
    console.locator(f"#event-types tr[data-event-type='{kind}']").get_by_role(
        "button", name=f"Archive {kind}"
    ).click()
    console.wait_for_selector(f"#event-types tr[data-event-type='{kind}'] td:has-text('(archived)')")
    assert admin(server, "GET", f"/event-types/{kind}")["archived"] is True

    row.get_by_role("button", name="Portal link for Initech").click()
    link = console.locator("#portal-result a").get_attribute("href")
    assert link is not None and link.startswith(server.url + "/portal#token=tdp_")
    portal = page_for(link.removeprefix(server.url))
    portal.wait_for_selector("#title:text-is('Webhooks of Initech')")

    row.get_by_role("button", name="Revoke the portal links of Initech").click()
    console.wait_for_selector("#portal-result:has-text('revoked')")
    portal.reload()
    portal.wait_for_selector("#gate:has-text('this portal link was revoked')")
    page_for.watched.expect_refusal(401, f"/api/webhooks/apps/{app_id}")  # type: ignore[attr-defined]
