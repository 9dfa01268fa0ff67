"""Connection limits hold on every transport, on both engines (Issue 17.4).

``max_connections_per_ip`` and ``max_connections_per_user`` count WebSockets, SSE and NDJSON
streams while open and long polls while held, all in one count: past a limit an HTTP request gets
429 with ``{"error": {"code": "rate_limited", …}}`` and a WebSocket close 4029. Closing frees the
slot; hundreds of opened and abandoned requests leave the count where it was (no leak).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.transports.conftest import TOKEN_SECRET, run_server
from tests.transports.readers import wait_until

PER_IP = 20
PER_USER = 5
KINDS = ("sse", "stream", "poll")


def counted(server: Any, *, user: str | None = None) -> int:
    limiter = server.node.security.limiter
    return int(limiter.count(user=user) if user is not None else limiter.count(ip="127.0.0.1"))


class Held:
    """Requests of one kind held open (streams read up to their first line; polls held)."""

    def __init__(self, server: Any, http: httpx.AsyncClient, kind: str, params: dict[str, str]) -> None:
        self.server = server
        self.http = http
        self.kind = kind
        self.params = params
        self.tasks: list[asyncio.Task[Any]] = []
        # a stream's exit stack and its line iterator (dropping the iterator would end the stream)
        self.streams: list[tuple[contextlib.AsyncExitStack, AsyncIterator[str]]] = []

    async def open(self, channel: str) -> httpx.Response | None:
        """Open one; the answer if it was refused at once, else None (held)."""
        params = {**self.params, "channel": channel}
        if self.kind == "poll":
            before = counted(self.server)
            task = asyncio.get_running_loop().create_task(
                self.http.get("/poll", params={**params, "timeout": "10"})
            )
            # held once the server counts it; refused once answered
            await wait_until(lambda: task.done() or counted(self.server) > before, "the poll held")
            if task.done():
                return task.result()
            self.tasks.append(task)
            return None
        stack = contextlib.AsyncExitStack()
        response = await stack.enter_async_context(self.http.stream("GET", f"/{self.kind}", params=params))
        if response.status_code != 200:
            await response.aread()
            await stack.aclose()
            return response
        lines = response.aiter_lines()
        await anext(lines)  # the stream is live
        self.streams.append((stack, lines))
        return None

    async def close_one(self) -> None:
        if self.kind == "poll":
            task = self.tasks.pop()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                await task
        else:
            await self.streams.pop()[0].aclose()

    async def close_all(self) -> None:
        while self.tasks or self.streams:
            await self.close_one()


@contextlib.asynccontextmanager
async def held(
    server: Any, http: httpx.AsyncClient, kind: str, params: dict[str, str] | None = None
) -> AsyncIterator[Held]:
    requests = Held(server, http, kind, params or {})
    try:
        yield requests
    finally:
        await requests.close_all()


def assert_refused(response: httpx.Response | None, what: str) -> None:
    assert response is not None, f"{what}: admitted past the limit"
    assert response.status_code == 429, (what, response.status_code, response.text)
    error = response.json()["error"]
    assert error["code"] == "rate_limited" and "too many connections" in error["message"]


def client(server: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.url, timeout=15, limits=httpx.Limits(max_connections=200, max_keepalive_connections=0)
    )


@pytest.mark.parametrize("kind", KINDS)
async def test_the_ip_limit_holds_for_each_http_transport_and_frees_on_close(engine: str, kind: str):
    with run_server(limits={"max_connections_per_ip": PER_IP}) as server:
        async with client(server) as http, held(server, http, kind) as requests:
            for i in range(PER_IP):
                assert await requests.open(f"lim-{kind}-{i}") is None, i
            await wait_until(lambda: counted(server) == PER_IP, "every request counted")
            assert_refused(await requests.open(f"lim-{kind}-over"), kind)
            # the count is shared with the other transports: no WebSocket either
            async with connect(server.ws_url) as ws:
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 10)
                assert ws.close_code == 4029
            await requests.close_one()  # a slot comes back once one ends
            await wait_until(lambda: counted(server) == PER_IP - 1, "the closed request released")
            assert await requests.open(f"lim-{kind}-again") is None
            assert counted(server) == PER_IP
        await wait_until(lambda: counted(server) == 0, "every request released")


async def test_a_burst_of_every_transport_at_once_admits_exactly_the_limit(engine: str):
    """Three times the limit of each kind, all at once and mixed: exactly the limit held."""
    with run_server(limits={"max_connections_per_ip": PER_IP}) as server:
        async with client(server) as http:

            async def attempt(kind: str, i: int) -> int:
                params = {"channel": f"burst-{kind}-{i}"}
                if kind == "poll":
                    params["timeout"] = "10"
                async with http.stream("GET", f"/{kind}", params=params) as response:
                    if response.status_code == 429:
                        assert (await response.aread()).startswith(b'{"error":')
                    else:
                        await asyncio.Event().wait()  # held until cancelled
                    return response.status_code

            tasks = [
                asyncio.get_running_loop().create_task(attempt(kind, i))
                for i in range(3 * PER_IP)
                for kind in KINDS
            ]

            def refused() -> int:
                return sum(1 for t in tasks if t.done() and not t.cancelled())

            try:
                await wait_until(lambda: counted(server) + refused() == len(tasks), "every answer")
                assert counted(server) == PER_IP
                assert {t.result() for t in tasks if t.done()} == {429}
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            await wait_until(lambda: counted(server) == 0, "every request released")


async def test_opening_and_abandoning_hundreds_of_requests_leaks_no_slot(engine: str):
    with run_server(limits={"max_connections_per_ip": PER_IP}) as server:
        async with client(server) as http:
            for round_ in range(40):  # 200 requests: every kind, ended every way
                async with held(server, http, KINDS[round_ % 3]) as requests:
                    for i in range(3):
                        assert await requests.open(f"leak-{round_}-{i}") is None
                short = await http.get("/poll", params={"channel": "leak", "timeout": "0"})
                assert short.status_code == 200
                bad = await http.get("/sse", params={"channel": "bad name!"})
                assert bad.status_code == 400
            async with connect(server.ws_url):
                pass
            await wait_until(lambda: counted(server) == 0, "the count back to zero")
            async with held(server, http, "sse") as streams, held(server, http, "poll") as polls:
                for i in range(PER_IP // 2):
                    assert await streams.open(f"after-{i}") is None
                    assert await polls.open(f"after-poll-{i}") is None
                assert_refused(await streams.open("after-over"), "after the churn")


async def test_the_user_limit_holds_for_http_transports_and_websockets(engine: str):
    with run_server(token_secret=TOKEN_SECRET, limits={"max_connections_per_user": PER_USER}) as server:
        token = jwt.encode({"sub": "ann", "exp": int(time.time()) + 60}, TOKEN_SECRET, algorithm="HS256")
        async with client(server) as http, held(server, http, "sse", {"token": token}) as streams:
            for i in range(PER_USER - 1):
                assert await streams.open(f"user-{i}") is None
            async with held(server, http, "poll", {"token": token}) as polls:
                assert await polls.open("user-poll") is None
                await wait_until(lambda: counted(server, user="ann") == PER_USER, "ann counted")
                for kind in KINDS:
                    async with held(server, http, kind, {"token": token}) as extra:
                        assert_refused(await extra.open(f"user-over-{kind}"), kind)
                async with connect(f"{server.ws_url}?token={token}") as ws:
                    with pytest.raises(ConnectionClosed):
                        await asyncio.wait_for(ws.recv(), 10)
                    assert ws.close_code == 4029
                async with held(server, http, "poll") as anonymous:  # not held back by ann
                    assert await anonymous.open("anonymous") is None
            await wait_until(lambda: counted(server, user="ann") == PER_USER - 1, "poll released")
            assert await streams.open("user-again") is None
        await wait_until(lambda: counted(server, user="ann") == 0, "ann released")
