"""The webhook sender's HTTP/1.1 pool against raw servers on loopback that answer as scripted:
keep-alive reuse, the response cap, early closes, bad responses, the SSRF guard per connection."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tidings.exceptions import Forbidden
from tidings.webhooks.http_pool import HttpError, HttpPool

LOOPBACK = [ipaddress.ip_network("127.0.0.0/8")]
Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[bytes] = []
        self.script: Script = self.ok

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        request = head + await reader.readexactly(length)
        self.requests.append(request)
        return request

    async def ok(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await self.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.script(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def raw() -> AsyncIterator[tuple[RawServer, str]]:
    server = RawServer()
    listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    yield server, f"http://127.0.0.1:{port}/hook?x=1"
    listening.close()


def pool(cap: int = 65536, expiry: float = 5.0, allowed: list[ipaddress.IPv4Network] = LOOPBACK) -> HttpPool:
    return HttpPool(
        allowed=list(allowed),
        response_cap=cap,
        verify=ssl.create_default_context(),
        keepalive_expiry=expiry,
        user_agent="test/1",
    )


async def test_requests_reuse_one_keep_alive_connection(raw: tuple[RawServer, str]) -> None:
    server, url = raw
    client = pool()
    for n in range(3):
        response = await client.post("ep", url, {"webhook-id": f"msg_{n}"}, b'{"n":1}')
        assert (response.status, response.body, response.retry_after) == (200, b"ok", None)
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /hook?x=1 HTTP/1.1\r\nhost: 127.0.0.1:")
    assert b"user-agent: test/1\r\n" in first and b"webhook-id: msg_0\r\n" in first
    assert first.endswith(b'content-length: 7\r\n\r\n{"n":1}')
    client.close()


async def test_an_idle_connection_past_its_expiry_is_not_reused(raw: tuple[RawServer, str]) -> None:
    server, url = raw
    client = pool(expiry=0.05)
    await client.post("ep", url, {}, b"1")
    await asyncio.sleep(0.1)
    await client.post("ep", url, {}, b"2")
    assert server.connections == 2


async def test_a_new_url_for_the_key_drops_the_old_connections(raw: tuple[RawServer, str]) -> None:
    server, url = raw
    client = pool()
    await client.post("ep", url, {}, b"1")
    await client.post("ep", url.replace("/hook?x=1", "/other"), {}, b"2")
    assert server.connections == 2
    assert server.requests[1].startswith(b"POST /other HTTP/1.1")


async def test_a_long_body_is_cut_at_the_cap_and_its_connection_closed(raw: tuple[RawServer, str]) -> None:
    server, url = raw

    async def chatty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 503 Busy\r\nRetry-After: 7\r\ncontent-length: 100000\r\n\r\n" + b"x" * 3000)
        await writer.drain()
        await asyncio.sleep(5)

    server.script = chatty
    client = pool(cap=1024)
    response = await client.post("ep", url, {}, b"1")
    assert (response.status, len(response.body), response.retry_after) == (503, 1024, "7")
    server.script = server.ok
    await client.post("ep", url, {}, b"2")
    assert server.connections == 2  # the cut connection was not reused


async def test_connection_close_and_a_body_ending_with_the_connection(raw: tuple[RawServer, str]) -> None:
    server, url = raw

    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
        await writer.drain()

    server.script = until_close
    client = pool()
    response = await client.post("ep", url, {}, b"1")
    assert (response.status, response.body) == (200, b"all of it")
    await client.post("ep", url, {}, b"2")
    assert server.connections == 2


async def test_a_close_before_the_status_and_a_bad_response_fail_the_attempt(
    raw: tuple[RawServer, str],
) -> None:
    server, url = raw

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)

    server.script = hang_up
    client = pool()
    with pytest.raises(HttpError, match="connection closed"):
        await client.post("ep", url, {}, b"1")

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await asyncio.sleep(5)

    server.script = garbage
    with pytest.raises(HttpError, match="bad response"):
        await client.post("ep", url, {}, b"1")


async def test_a_server_speaking_out_of_turn_loses_its_connection(raw: tuple[RawServer, str]) -> None:
    server, url = raw

    async def extra(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")  # nobody asked
        await server.ok(reader, writer)

    server.script = extra
    client = pool()
    await client.post("ep", url, {}, b"1")
    await asyncio.sleep(0.2)
    server.script = server.ok
    assert (await client.post("ep", url, {}, b"2")).status == 200
    assert server.connections == 2


async def test_a_timeout_closes_the_connection_in_use(raw: tuple[RawServer, str]) -> None:
    server, url = raw

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.read_request(reader)
        await asyncio.sleep(5)

    server.script = slow
    client = pool()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await client.post("ep", url, {}, b"1")
    server.script = server.ok
    assert (await client.post("ep", url, {}, b"2")).status == 200
    assert server.connections == 2


async def test_refused_addresses_unreachable_ports_and_header_injection(raw: tuple[RawServer, str]) -> None:
    server, url = raw
    with pytest.raises(Forbidden):
        await pool(allowed=[]).post("ep", url, {}, b"1")  # loopback, not allowed
    with pytest.raises(HttpError, match="line break"):
        await pool().post("ep", url, {"webhook-id": "a\r\nx-injected: 1"}, b"1")
    with pytest.raises(HttpError, match="not allowed in a request"):
        await pool().post("ep", url.replace("/hook?x=1", "/a%20b c"), {}, b"1")
    port = url.split(":")[2].split("/")[0]
    listening_elsewhere = url.replace(port, "1")
    with pytest.raises(HttpError, match="Error"):
        await pool().post("ep", listening_elsewhere, {}, b"1")
    assert server.requests == []
