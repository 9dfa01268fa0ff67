"""The SSRF guard: pure classification, the API refusing endpoints, the dispatcher refusing to
connect, and the allow list."""

from __future__ import annotations

import asyncio
import ipaddress
import time

import pytest

from conftest import Hub, HubFactory, Receiver, status
from tidings.exceptions import BadRequest, Forbidden
from tidings.webhooks.ssrf import parse_networks, refusal, resolve, split_url

REFUSED = [
    "127.0.0.1",
    "10.0.0.1",
    "169.254.169.254",
    "::1",
    "::ffff:127.0.0.1",
    "64:ff9b::7f00:1",
    "2002:7f00:1::",
    "2002:a9fe:a9fe::",
    "::ffff:169.254.169.254",
    "0.0.0.0",
    "::",
    "224.0.0.1",
    "ff02::1",
    "fe80::1",
    "fd00:ec2::254",
    "100.64.0.1",
    "192.168.1.1",
    "172.16.0.1",
    "240.0.0.1",
    "100.100.100.200",
    "fc00::1",
]
ALLOWED = ["93.184.216.34", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", REFUSED)
def test_refusal_names_why_an_internal_address_is_refused(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ALLOWED)
def test_refusal_lets_public_addresses_through(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


def test_the_allow_list_lifts_the_refusal_also_for_embedded_forms() -> None:
    allowed = parse_networks(["127.0.0.0/8"])
    for address in ("127.0.0.1", "::ffff:127.0.0.1", "64:ff9b::7f00:1"):
        assert refusal(ipaddress.ip_address(address), allowed) is None
    assert refusal(ipaddress.ip_address("10.0.0.1"), allowed) is not None


@pytest.mark.parametrize(
    "url",
    [
        "ftp://x.example/",
        "file:///etc/passwd",
        "http:///nohost",
        "http://user:pw@example.com/",
        "gopher://a/",
    ],
)
def test_split_url_accepts_only_http_and_https(url: str) -> None:
    with pytest.raises(BadRequest):
        split_url(url)


def test_split_url_keeps_host_header_and_path() -> None:
    target = split_url("https://hooks.example.com:8443/in?x=1")
    assert target.host_header == "hooks.example.com:8443"
    assert target.url_for(ipaddress.ip_address("2606:4700::1")) == "https://[2606:4700::1]:8443/in?x=1"


async def test_resolve_refuses_a_name_that_resolves_to_loopback() -> None:
    with pytest.raises(Forbidden):
        await resolve(split_url("http://localhost:1/"), [])
    allowed = await resolve(split_url("http://localhost:1/"), parse_networks(["127.0.0.0/8", "::1/128"]))
    assert allowed.address.is_loopback


URLS = [
    "http://127.0.0.1:9/",
    "http://10.0.0.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]:9/",
    "http://[::ffff:127.0.0.1]:9/",
    "http://[64:ff9b::7f00:1]:9/",
    "http://localhost:9/",
]


@pytest.mark.parametrize("url", URLS)
async def test_the_api_refuses_endpoints_resolving_to_internal_addresses(
    make_hub: HubFactory, url: str
) -> None:
    hub = await make_hub({"allow_private": []})
    response = await hub.client.post("/api/webhooks", json={"url": url, "channels": ["c"]})
    assert response.status_code == 400
    assert "SSRF" in response.json()["error"]["message"]


async def test_the_api_accepts_them_when_allow_listed(make_hub: HubFactory) -> None:
    hub = await make_hub({"allow_private": ["127.0.0.0/8", "10.0.0.0/8", "169.254.169.254/32", "::1/128"]})
    for url in URLS:
        response = await hub.client.post("/api/webhooks", json={"url": url, "channels": ["c"]})
        assert response.status_code == 201, (url, response.text)


async def test_the_dispatcher_refuses_to_connect_when_the_allow_list_no_longer_covers_it(
    make_hub: HubFactory, receiver: Receiver
) -> None:
    # the endpoint was accepted earlier (allow-listed); a server started without the allow list
    # still refuses at every attempt, and nothing reaches the receiver
    first: Hub = await make_hub()
    endpoint = await first.create(receiver.on("/ok", status(200)), ["c"])
    second = await make_hub({"allow_private": [], "retry_schedule": [0.01]})
    await second.server.service.store.put_endpoint(first.server.service.endpoints[endpoint["id"]])
    second.server.service.endpoints[endpoint["id"]] = first.server.service.endpoints[endpoint["id"]]
    await second.publish("c", 1)

    async def failed() -> bool:
        found = await second.deliveries(endpoint["id"], "failed")
        return bool(found) and "SSRF" in str(found[0]["last_error"])

    deadline = time.monotonic() + 5
    while not await failed():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert receiver.at("/ok") == []
