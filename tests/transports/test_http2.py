"""Serving over HTTP/2 (Hypercorn, h2 over TLS): many SSE streams share one connection."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme
import websockets

from tests.transports.readers import channel_name
from tidings.server.http2 import serve_http2
from tidings.settings import load_settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def h2_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, ssl.SSLContext]]:
    """Hypercorn with a trustme certificate for 127.0.0.1, in a thread; yields (url, context)."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    folder: Path = tmp_path_factory.mktemp("tls")
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    port = free_port()
    settings = load_settings(port=port, log_level="warning")
    stop = threading.Event()
    started = threading.Event()

    async def main() -> None:
        async def trigger() -> None:
            started.set()
            await asyncio.to_thread(stop.wait)

        await serve_http2(settings, certfile=certfile, keyfile=keyfile, shutdown_trigger=trigger)

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert started.wait(15), "hypercorn did not start"
    context = ssl.create_default_context()
    ca.configure_trust(context)
    url = f"https://127.0.0.1:{port}"
    with socket.create_connection(("127.0.0.1", port), timeout=10):
        pass  # listening
    try:
        yield url, context
    finally:
        stop.set()
        thread.join(15)


async def test_ten_sse_streams_share_one_http2_connection_and_all_receive(
    h2_server: tuple[str, ssl.SSLContext],
) -> None:
    url, context = h2_server
    channel = channel_name()
    async with httpx.AsyncClient(base_url=url, http2=True, verify=context, timeout=10) as client:
        streams = [client.stream("GET", "/sse", params={"channel": channel}) for _ in range(10)]
        responses = [await s.__aenter__() for s in streams]
        try:
            assert {r.http_version for r in responses} == {"HTTP/2"}
            readers = [r.aiter_bytes() for r in responses]
            for reader in readers:  # each stream is live once its ready event arrived
                buffer = b""
                while b"event: ready" not in buffer:
                    buffer += await anext(reader)
            published = await client.post("/api/publish", json={"channel": channel, "data": "to all"})
            assert published.http_version == "HTTP/2"

            async def receive(reader: object) -> bytes:
                buffer = b""
                while b'"to all"' not in buffer:
                    buffer += await anext(reader)  # type: ignore[call-overload]
                return buffer

            async with asyncio.timeout(10):
                got = await asyncio.gather(*(receive(r) for r in readers))
            assert all(b"event: message" in chunk for chunk in got)
            pool = client._transport._pool  # type: ignore[attr-defined]
            assert len(pool.connections) == 1
        finally:
            for s in streams:
                await s.__aexit__(None, None, None)


class CloseLines(logging.Handler):
    """Collects the node's ``close transport=ws`` log lines; ``seen`` is set at each."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("close transport=ws"):
            self.lines.append(record.getMessage())
            self.seen.set()


@pytest.mark.parametrize("code", [1000, 1001])
async def test_a_client_closing_a_websocket_normally_is_logged_with_its_code(
    h2_server: tuple[str, ssl.SSLContext], code: int
) -> None:
    # Hypercorn told the app 1006 (abnormal) for every close the client started.
    url, shared = h2_server
    # WebSockets go over HTTP/1.1 (ALPN): a context of our own, httpx set h2 on the shared one.
    context = ssl.create_default_context()
    for der in shared.get_ca_certs(binary_form=True):
        context.load_verify_locations(cadata=der)
    context.set_alpn_protocols(["http/1.1"])
    logger = logging.getLogger("tidings.connections")
    handler, level = CloseLines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        async with websockets.connect(url.replace("https", "wss") + "/ws", ssl=context) as ws:
            await ws.send(json.dumps({"op": "subscribe", "ref": 1, "channel": channel_name()}))
            assert json.loads(await ws.recv())["op"] == "subscribed"
            await ws.close(code)
        assert await asyncio.to_thread(handler.seen.wait, 10), "no close line logged"
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert len(handler.lines) == 1, handler.lines
    assert f"code={code} " in handler.lines[0] and "by=client" in handler.lines[0], handler.lines
