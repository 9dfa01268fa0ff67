"""https endpoints: the connection goes to the checked address, with the URL's host name as TLS
server name (certificate verified against it) and Host header."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conftest import HubFactory, Received, shutdown, wait_for


@pytest.fixture
async def tls_receiver(tmp_path: Path) -> AsyncIterator[tuple[int, list[Received], Path]]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    cert_file, ca_file = tmp_path / "cert.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    ca.cert_pem.write_to_path(str(ca_file))
    got: list[Received] = []

    async def handle(request: Request) -> Response:
        got.append(Received(request.url.path, dict(request.headers), await request.body(), 0))
        return Response(status_code=200)

    app = Starlette(routes=[Route("/in", handle, methods=["POST"])])
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        ws="none",
        ssl_certfile=str(cert_file),
        lifespan="off",
    )
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    await wait_for(lambda: server.started)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield port, got, ca_file
    await shutdown(server, task)


async def test_an_https_endpoint_is_verified_against_its_host_name(
    make_hub: HubFactory, tls_receiver: tuple[int, list[Received], Path]
) -> None:
    port, got, ca_file = tls_receiver
    hub = await make_hub({"ca_file": str(ca_file)})
    await hub.create(f"https://localhost:{port}/in", ["c"])
    await hub.publish("c", {"tls": True})
    await wait_for(lambda: len(got) == 1)
    assert got[0].headers["host"] == f"localhost:{port}"
    assert got[0].json()["data"] == {"tls": True}


async def test_a_certificate_for_another_name_fails_the_attempt(
    make_hub: HubFactory, tls_receiver: tuple[int, list[Received], Path]
) -> None:
    port, got, ca_file = tls_receiver
    hub = await make_hub({"ca_file": str(ca_file), "retry_schedule": [0.01]})
    endpoint = await hub.create(f"https://127.0.0.1:{port}/in", ["c"])  # cert is for localhost
    await hub.publish("c", 1)
    deadline = time.monotonic() + 10
    while not await hub.deliveries(endpoint["id"], "failed"):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert got == []
