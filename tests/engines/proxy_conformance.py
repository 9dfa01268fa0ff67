"""The proxies to the application's backend (issue 20), on both engines: one suite, run by
``test_sockets.py`` and ``test_asgi.py`` as the rest of :mod:`tests.engines.conformance`.

The backend is real (:mod:`tests.proxy_backend`: Starlette under uvicorn on loopback, its own
thread and loop); the clients are real (``websockets``, ``httpx``, Chromium's EventSource).
Deadlines are generous and nothing is timed but "answered before the slow backend would have
answered" (the backend then sleeps far longer than the deadline).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.engines.conformance import API_KEY, DEADLINE, SECRET, token
from tests.proxy_backend import Backend, Raw, closed_port, run_backend
from tests.serving import RunningServer, serve
from tests.transports.readers import channel_name, publish, wait_until

__all__ = ["ProxyConformance"]

CHROMIUM = "/usr/bin/chromium"
HAS_CHROMIUM = os.path.exists(CHROMIUM)
FLAGS = [  # as tests/browser/conftest.py's
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SLOW = 60.0  # how long a "slow" backend takes: far past every deadline here
TIMEOUT = 3.0  # the proxies' timeout on the shared server (the default; a loaded machine is slow)
COOKIE = "session=alice-session"
ROOM = {"subscribe_proxy": True, "publish_proxy": True, "public": False, "client_publish": False}


def proxies(backend: Backend, timeout: float = TIMEOUT, **extra: Any) -> dict[str, Any]:
    kinds = ("connect", "refresh", "subscribe", "publish", "rpc")
    return {kind: {"url": backend.url(kind), "timeout": timeout} for kind in kinds} | extra


def by_cookie(body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
    """The connect proxy of an application with sessions: the cookie says who it is."""
    if headers.get("cookie") == COOKIE:
        return {"result": {"user": "alice", "info": {"name": "Alice"}}}
    return {"error": {"code": "unauthorized", "message": "log in first"}}


async def recv(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(DEADLINE):
        message: dict[str, Any] = orjson.loads(await ws.recv())
        return message


async def closed_with(ws: ClientConnection) -> tuple[int, str]:
    """The close code and reason the server ended ``ws`` with (frames before it are skipped)."""
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(DEADLINE):
            while True:
                await ws.recv()
    assert ws.close_code is not None
    return ws.close_code, ws.close_reason or ""


async def metric(http: httpx.AsyncClient, name: str, **labels: str) -> float:
    answer = await http.get("/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


class ProxyConformance:
    """The proxy behaviours; a subclass sets :attr:`engine`."""

    engine: ClassVar[str]

    @pytest.fixture(scope="class")
    @classmethod
    def backend(cls) -> Iterator[Backend]:
        with run_backend() as backend:
            yield backend

    @pytest.fixture(scope="class")
    @classmethod
    def proxied(cls, backend: Backend) -> Iterator[RunningServer]:
        """Every proxy on, at :func:`backend`; the namespace ``room`` asks the subscribe and
        publish proxies; tokens signed with :data:`SECRET` still work."""
        with serve(
            engine=cls.engine,
            token_secret=SECRET,
            api_key=API_KEY,
            proxy=proxies(backend),
            namespaces={"room": ROOM},
        ) as running:
            yield running

    @pytest.fixture(autouse=True)
    def _fresh_backend(self, request: pytest.FixtureRequest) -> None:
        if "backend" in request.fixturenames:
            backend: Backend = request.getfixturevalue("backend")
            backend.reset()
            backend.answers["connect"] = by_cookie

    @pytest.fixture
    async def api(self, proxied: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
        async with httpx.AsyncClient(
            base_url=proxied.url, timeout=DEADLINE, headers={"Authorization": f"Bearer {API_KEY}"}
        ) as client:
            yield client

    @contextlib.asynccontextmanager
    async def ws(self, server: RunningServer, cookie: str | None = COOKIE) -> AsyncIterator[ClientConnection]:
        headers = {"Cookie": cookie} if cookie else {}
        async with connect(server.ws_url, additional_headers=headers, open_timeout=DEADLINE) as ws:
            yield ws

    # connect ------------------------------------------------------------------------------------

    async def test_connect_proxy_names_the_user_from_the_session_cookie(
        self, proxied: RunningServer, backend: Backend
    ) -> None:
        backend.answers["connect"] = by_cookie
        async with self.ws(proxied) as ws:
            await ws.send(orjson.dumps({"op": "connect", "ref": 1, "data": {"app": "v2"}}).decode())
            connected = await recv(ws)
            assert connected["op"] == "connected" and connected["user"] == "alice"
        [seen] = backend.of("connect")
        assert seen.body["transport"] == "ws"
        assert seen.body["client"] == connected["client"]
        assert seen.body["data"] == {"app": "v2"}
        assert seen.body["remote_addr"] == "127.0.0.1"
        assert "user" not in seen.body  # not known before the backend says it
        assert seen.headers["cookie"] == COOKIE
        assert seen.headers["x-forwarded-for"] == "127.0.0.1"

    @pytest.mark.parametrize("transport", ["sse", "stream", "poll"])
    async def test_connect_proxy_on_http_transports_reads_the_cookie(
        self, proxied: RunningServer, backend: Backend, transport: str
    ) -> None:
        backend.answers["connect"] = by_cookie
        channel = channel_name()
        path = {"sse": "/sse", "stream": "/stream", "poll": "/poll"}[transport]
        params = {"channel": channel, "timeout": "0"}
        async with httpx.AsyncClient(base_url=proxied.url, timeout=DEADLINE) as client:
            async with client.stream("GET", path, params=params, headers={"Cookie": COOKIE}) as answer:
                assert answer.status_code == 200
            refused = await client.get(path, params=params, headers={"Cookie": "session=stolen"})
        assert refused.status_code == 403
        assert refused.json() == {"error": {"code": "unauthorized", "message": "log in first"}}
        allowed, _ = backend.of("connect")
        assert allowed.body["transport"] == transport
        assert allowed.headers["cookie"] == COOKIE

    async def test_a_refused_connect_closes_with_4003_and_the_reason(
        self, proxied: RunningServer, backend: Backend
    ) -> None:
        backend.answers["connect"] = by_cookie
        async with self.ws(proxied, cookie="session=nobody") as ws:
            await ws.send('{"op":"connect","ref":1}')
            assert await closed_with(ws) == (4003, "log in first")
        # a first command other than connect asks the proxy as well
        async with self.ws(proxied, cookie=None) as ws:
            await ws.send('{"op":"ping","ref":1}')
            assert await closed_with(ws) == (4003, "log in first")

    async def test_a_disconnect_answer_closes_with_the_backends_code(
        self, proxied: RunningServer, backend: Backend
    ) -> None:
        backend.answers["connect"] = lambda b, h: {"disconnect": {"code": 4500, "reason": "banned"}}
        async with self.ws(proxied) as ws:
            await ws.send('{"op":"connect","ref":1}')
            assert await closed_with(ws) == (4500, "banned")
        async with httpx.AsyncClient(base_url=proxied.url, timeout=DEADLINE) as client:
            refused = await client.get("/poll", params={"channel": "c", "timeout": "0"})
        assert refused.status_code == 403
        assert refused.json()["error"]["message"] == "banned"

    async def test_a_valid_token_skips_the_connect_proxy(
        self, proxied: RunningServer, backend: Backend
    ) -> None:
        async with self.ws(proxied, cookie=None) as ws:
            await ws.send(orjson.dumps({"op": "connect", "ref": 1, "token": token("bob")}).decode())
            assert (await recv(ws))["user"] == "bob"
        async with httpx.AsyncClient(base_url=proxied.url, timeout=DEADLINE) as client:
            answer = await client.get("/poll", params={"channel": "c", "timeout": "0", "token": token("bob")})
        assert answer.status_code == 200
        assert backend.of("connect") == []

    @pytest.mark.parametrize("failure", ["down", "slow", "html", "wrong shape"])
    async def test_an_unavailable_backend_is_told_as_1013_and_503_in_time(
        self, backend: Backend, failure: str
    ) -> None:
        url = f"http://127.0.0.1:{closed_port()}/connect" if failure == "down" else backend.url("connect")
        backend.delay["connect"] = SLOW if failure == "slow" else 0.0
        if failure == "html":
            backend.answers["connect"] = lambda b, h: Raw(502, b"<html><body>Bad gateway</body></html>")
        elif failure == "wrong shape":
            backend.answers["connect"] = lambda b, h: {"result": {"user": 42}}
        timeout = 0.5
        with serve(engine=self.engine, proxy={"connect": {"url": url, "timeout": timeout}}) as server:
            started = time.monotonic()
            async with self.ws(server) as ws:
                await ws.send('{"op":"connect","ref":1}')
                code, reason = await closed_with(ws)
            assert code == 1013 and "connect proxy is unavailable" in reason
            async with httpx.AsyncClient(base_url=server.url, timeout=SLOW) as client:
                answer = await client.get("/sse", params={"channel": "c"})
                assert answer.status_code == 503
                assert answer.json()["error"]["code"] == "unavailable"
                assert answer.headers["retry-after"] == "1"
                # answered long before the slow backend would have: the timeout holds
                assert time.monotonic() - started < SLOW / 2
                # the node keeps serving what needs no proxy
                assert (await client.get("/healthz")).status_code == 200
                reason_label = {"down": "unreachable", "slow": "timeout", "html": "status"}.get(
                    failure, "invalid"
                )
                assert (
                    await metric(client, "tidings_proxy_errors_total", proxy="connect", reason=reason_label)
                    == 2
                )
                unavailable = await metric(
                    client, "tidings_proxy_requests_total", proxy="connect", outcome="unavailable"
                )
                assert unavailable == 2

    # server-side subscriptions, refresh ---------------------------------------------------------

    async def test_connect_result_channels_are_subscribed_at_once(
        self, proxied: RunningServer, backend: Backend, api: httpx.AsyncClient
    ) -> None:
        personal = f"room:{channel_name()}"  # in the proxied namespace, yet not asked about
        backend.answers["connect"] = lambda b, h: {"result": {"user": "alice", "channels": [personal]}}
        async with self.ws(proxied) as ws:
            await ws.send('{"op":"connect","ref":1}')
            assert (await recv(ws))["op"] == "connected"
            subscribed = await recv(ws)
            assert subscribed["op"] == "subscribed" and subscribed["channel"] == personal
            assert "ref" not in subscribed
            await publish(api, personal, "for alice")
            message = await recv(ws)
            assert message["op"] == "message" and message["data"] == "for alice"
        # an HTTP stream without ?channel= carries them as well
        async with (
            httpx.AsyncClient(base_url=proxied.url, timeout=DEADLINE) as client,
            client.stream("GET", "/stream") as stream,
        ):
            lines = stream.aiter_lines()
            ready = orjson.loads(await anext(lines))
            assert ready["op"] == "ready" and list(ready["channels"]) == [personal]
        assert backend.of("subscribe") == []

    async def test_the_refresh_proxy_extends_a_connection_before_it_expires(
        self, proxied: RunningServer, backend: Backend
    ) -> None:
        backend.answers["connect"] = lambda b, h: {"result": {"user": "alice", "expire_at": time.time() + 2}}
        backend.answers["refresh"] = lambda b, h: {"result": {"expire_at": time.time() + 600}}
        async with self.ws(proxied) as ws:
            await ws.send('{"op":"connect","ref":1}')
            assert (await recv(ws))["op"] == "connected"
            await wait_until(lambda: bool(backend.of("refresh")), "a refresh request")
            await asyncio.sleep(2.5)  # past the first expiry: still open
            await ws.send('{"op":"ping","ref":2}')
            assert (await recv(ws))["op"] == "pong"
        [refresh] = backend.of("refresh")
        assert refresh.body["user"] == "alice" and refresh.body["transport"] == "ws"

    async def test_an_http_stream_ends_at_the_connect_results_expiry(
        self, proxied: RunningServer, backend: Backend
    ) -> None:
        backend.answers["connect"] = lambda b, h: {
            "result": {"user": "alice", "expire_at": time.time() + 1.5}
        }
        async with (
            httpx.AsyncClient(base_url=proxied.url, timeout=DEADLINE) as client,
            client.stream("GET", "/stream", params={"channel": channel_name()}) as stream,
        ):
            lines = [orjson.loads(line) async for line in stream.aiter_lines() if line]
        assert lines[0]["op"] == "ready"
        assert lines[-1]["op"] == "disconnect" and lines[-1]["code"] == 4001  # reconnect: asked again

    async def test_a_refused_refresh_disconnects(self, proxied: RunningServer, backend: Backend) -> None:
        backend.answers["connect"] = lambda b, h: {"result": {"user": "alice", "expire_at": time.time() + 2}}
        backend.answers["refresh"] = lambda b, h: {"error": {"code": "unauthorized", "message": "logged out"}}
        async with self.ws(proxied) as ws:
            await ws.send('{"op":"connect","ref":1}')
            assert (await recv(ws))["op"] == "connected"
            assert await closed_with(ws) == (4003, "logged out")

    async def test_an_unavailable_refresh_backend_lets_the_connection_expire_with_4001(
        self, proxied: RunningServer, backend: Backend
    ) -> None:
        backend.answers["connect"] = lambda b, h: {"result": {"user": "alice", "expire_at": time.time() + 2}}
        backend.delay["refresh"] = SLOW
        async with self.ws(proxied) as ws:
            await ws.send('{"op":"connect","ref":1}')
            assert (await recv(ws))["op"] == "connected"
            code, _ = await closed_with(ws)
        assert code == 4001  # reconnect: the connect proxy decides again
        assert backend.of("refresh")

    async def test_with_skip_with_token_false_a_token_holder_is_asked_about_too(
        self, backend: Backend
    ) -> None:
        connect = {"url": backend.url("connect"), "skip_with_token": False}
        backend.answers["connect"] = lambda b, h: {"result": {"info": {"seen_as": b.get("user")}}}
        with serve(engine=self.engine, token_secret=SECRET, proxy={"connect": connect}) as server:
            async with self.ws(server, cookie=None) as ws:
                await ws.send(orjson.dumps({"op": "connect", "ref": 1, "token": token("bob")}).decode())
                assert (await recv(ws))["user"] == "bob"  # the token's user, kept
                # no [proxy.rpc]: an rpc is refused, the connection stays open
                await ws.send('{"op":"rpc","ref":2,"method":"m"}')
                refused = await recv(ws)
                assert refused["op"] == "error" and refused["code"] == "not_found"
            async with httpx.AsyncClient(base_url=server.url, timeout=DEADLINE) as client:
                answer = await client.get(
                    "/poll", params={"channel": "c", "timeout": "0", "token": token("bob")}
                )
                assert answer.status_code == 200
            backend.answers["connect"] = lambda b, h: {"result": {"user": "mallory"}}
            async with self.ws(server, cookie=None) as ws:
                await ws.send(orjson.dumps({"op": "connect", "ref": 1, "token": token("bob")}).decode())
                code, _ = await closed_with(ws)
                assert code == 4003
            async with httpx.AsyncClient(base_url=server.url, timeout=DEADLINE) as client:
                answer = await client.get(
                    "/poll", params={"channel": "c", "timeout": "0", "token": token("bob")}
                )
                assert answer.status_code == 403
        assert [s.body.get("user") for s in backend.of("connect")] == ["bob"] * 4

    # subscribe, publish, rpc ---------------------------------------------------------------------

    async def test_the_subscribe_proxy_decides_in_its_namespace(
        self, proxied: RunningServer, backend: Backend
    ) -> None:
        open_room, closed_room = f"room:{channel_name()}", f"room:{channel_name()}"
        backend.answers["subscribe"] = lambda b, h: (
            {"result": {}}
            if b["channel"] == open_room
            else {"error": {"code": "forbidden", "message": "not a member"}}
        )
        async with self.ws(proxied) as ws:
            await ws.send(orjson.dumps({"op": "subscribe", "ref": 1, "channel": open_room}).decode())
            assert (await recv(ws))["op"] == "subscribed"
            await ws.send(orjson.dumps({"op": "subscribe", "ref": 2, "channel": closed_room}).decode())
            assert await recv(ws) == {"op": "error", "ref": 2, "code": "forbidden", "message": "not a member"}
        async with httpx.AsyncClient(
            base_url=proxied.url, timeout=DEADLINE, headers={"Cookie": COOKIE}
        ) as client:
            ok = await client.get("/poll", params={"channel": open_room, "timeout": "0"})
            refused = await client.get("/poll", params={"channel": closed_room, "timeout": "0"})
            assert ok.status_code == 200
            assert refused.status_code == 403
            assert refused.json()["error"] == {"code": "forbidden", "message": "not a member"}
        asked = backend.of("subscribe")
        assert [(s.body["transport"], s.body["channel"], s.body["user"]) for s in asked] == [
            ("ws", open_room, "alice"),
            ("ws", closed_room, "alice"),
            ("poll", open_room, "alice"),
            ("poll", closed_room, "alice"),
        ]
        assert all(s.headers["cookie"] == COOKIE for s in asked[:2])

    async def test_the_publish_proxy_may_rewrite_the_data(
        self, proxied: RunningServer, backend: Backend, api: httpx.AsyncClient
    ) -> None:
        room = f"room:{channel_name()}"
        backend.answers["publish"] = lambda b, h: (
            {"result": {"data": {"text": b["data"]["text"].upper(), "by": b["user"]}}}
            if b["data"]["text"] != "spam"
            else {"error": {"code": "forbidden", "message": "no spam"}}
        )
        async with self.ws(proxied) as ws:
            await ws.send(orjson.dumps({"op": "subscribe", "ref": 1, "channel": room}).decode())
            assert (await recv(ws))["op"] == "subscribed"
            await ws.send(
                orjson.dumps({"op": "publish", "ref": 2, "channel": room, "data": {"text": "hi"}}).decode()
            )
            replies = [await recv(ws), await recv(ws)]
            published = next(r for r in replies if r["op"] == "published")
            message = next(r for r in replies if r["op"] == "message")
            assert published["ref"] == 2
            assert message["data"] == {"text": "HI", "by": "alice"}
            await ws.send(
                orjson.dumps({"op": "publish", "ref": 3, "channel": room, "data": {"text": "spam"}}).decode()
            )
            assert await recv(ws) == {"op": "error", "ref": 3, "code": "forbidden", "message": "no spam"}
            # the server API never goes through the proxy
            await publish(api, room, {"text": "from the server"})
            assert (await recv(ws))["data"] == {"text": "from the server"}
        assert len(backend.of("publish")) == 2

    async def test_rpc_round_trip(self, proxied: RunningServer, backend: Backend) -> None:
        def rpc(body: dict[str, Any], headers: dict[str, str]) -> dict[str, Any]:
            if body["method"] == "sum":
                return {"result": {"data": sum(body["data"])}}
            return {"error": {"code": "not_found", "message": f"no method {body['method']}"}}

        backend.answers["rpc"] = rpc
        async with self.ws(proxied) as ws:
            await ws.send('{"op":"rpc","ref":5,"method":"sum","data":[1,2,3]}')
            assert await recv(ws) == {"op": "rpc", "ref": 5, "data": 6}
            await ws.send('{"op":"rpc","ref":6,"method":"nope"}')
            assert await recv(ws) == {
                "op": "error",
                "ref": 6,
                "code": "not_found",
                "message": "no method nope",
            }
            backend.delay["rpc"] = SLOW
            await ws.send('{"op":"rpc","ref":7,"method":"sum","data":[]}')
            late = await recv(ws)
            assert late["op"] == "error" and late["code"] == "unavailable"
            # the connection stays open after a refused or failed call
            await ws.send('{"op":"ping","ref":8}')
            assert (await recv(ws))["op"] == "pong"
        assert backend.of("rpc")[0].body["user"] == "alice"

    async def test_the_python_client_calls_rpc_with_a_token(
        self, proxied: RunningServer, backend: Backend
    ) -> None:
        from tidings import Client
        from tidings.exceptions import NotFound

        backend.answers["rpc"] = lambda b, h: (
            {"result": {"data": {"hello": b["user"]}}}
            if b["method"] == "greet"
            else {"error": {"code": "not_found", "message": "no such method"}}
        )
        async with Client(proxied.url, token=token("carol")) as client:
            assert await client.rpc("greet") == {"hello": "carol"}
            with pytest.raises(NotFound, match="no such method"):
                await client.rpc("other", [1])
        assert backend.of("connect") == []  # the token sufficed

    async def test_proxy_metrics_count_each_proxy(self, proxied: RunningServer, backend: Backend) -> None:
        async with httpx.AsyncClient(
            base_url=proxied.url, timeout=DEADLINE, headers={"Cookie": COOKIE}
        ) as client:
            before = await metric(client, "tidings_proxy_requests_total", proxy="connect", outcome="result")
            assert (await client.get("/poll", params={"channel": "c", "timeout": "0"})).status_code == 200
            after = await metric(client, "tidings_proxy_requests_total", proxy="connect", outcome="result")
            assert after == before + 1
            assert await metric(client, "tidings_proxy_latency_seconds_count", proxy="connect") >= 1

    # bounded concurrency --------------------------------------------------------------------------

    async def test_a_connect_storm_is_bounded_by_max_concurrency(self, backend: Backend) -> None:
        backend.answers["connect"] = lambda b, h: {"result": {"user": f"u{len(backend.seen)}"}}
        backend.delay["connect"] = 0.02
        limit, clients = 4, 120
        settings = {"connect": {"url": backend.url("connect"), "timeout": 30}, "max_concurrency": limit}
        with serve(engine=self.engine, proxy=settings) as server:
            async with httpx.AsyncClient(
                base_url=server.url, timeout=60, limits=httpx.Limits(max_connections=clients)
            ) as client:
                answers = await asyncio.gather(
                    *(client.get("/poll", params={"channel": "c", "timeout": "0"}) for _ in range(clients))
                )
        assert [a.status_code for a in answers] == [200] * clients
        assert len(backend.of("connect")) == clients
        assert backend.max_in_flight == limit  # never more, and the pool was used

    # the browser ---------------------------------------------------------------------------------

    @pytest.mark.browser
    async def test_chromium_eventsource_sends_the_session_cookie(
        self, proxied: RunningServer, backend: Backend, api: httpx.AsyncClient
    ) -> None:
        if not HAS_CHROMIUM:
            pytest.skip("needs Debian's Chromium")
        async_api = pytest.importorskip("playwright.async_api")
        backend.answers["connect"] = by_cookie
        channel = channel_name()
        async with async_api.async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            try:
                context = await browser.new_context()
                await context.add_cookies([{"name": "session", "value": "alice-session", "url": proxied.url}])
                page = await context.new_page()
                await page.goto(f"{proxied.url}/healthz")
                await page.evaluate(
                    """(channel) => {
                        window.received = null;
                        const source = new EventSource(`/sse?channel=${channel}`);
                        source.addEventListener("ready", () => { window.ready = true; });
                        source.addEventListener("message", (e) => {
                            window.received = JSON.parse(e.data);
                            source.close();
                        });
                    }""",
                    channel,
                )
                await page.wait_for_function("window.ready === true", timeout=DEADLINE * 1000)
                await publish(api, channel, "hello")
                await page.wait_for_function("window.received !== null", timeout=DEADLINE * 1000)
                message = await page.evaluate("window.received")
            finally:
                await browser.close()
        assert message["data"] == "hello"
        [seen] = backend.of("connect")
        assert seen.body["transport"] == "sse"
        assert seen.headers["cookie"] == COOKIE

    @pytest.mark.browser
    async def test_tidings_js_connects_by_cookie_and_calls_rpc(
        self, proxied: RunningServer, backend: Backend
    ) -> None:
        if not HAS_CHROMIUM:
            pytest.skip("needs Debian's Chromium")
        async_api = pytest.importorskip("playwright.async_api")
        backend.answers["rpc"] = lambda b, h: (
            {"result": {"data": {"sum": sum(b["data"]), "user": b["user"]}}}
            if isinstance(b["data"], list)
            else {"error": {"code": "bad_request", "message": "sum takes a list"}}
        )
        async with async_api.async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
            try:
                context = await browser.new_context()
                await context.add_cookies([{"name": "session", "value": "alice-session", "url": proxied.url}])
                page = await context.new_page()
                await page.goto(f"{proxied.url}/healthz")
                result = await page.evaluate(
                    """async () => {
                        const { Tidings } = await import("/static/tidings.js");
                        const client = new Tidings(location.origin, { transports: ["ws"] });
                        const sub = client.subscribe("room:lobby");
                        await new Promise((resolve) => sub.on("subscribed", resolve));
                        const answer = await client.rpc("sum", [1, 2, 3]);
                        const refused = await client.rpc("sum", "x").catch((e) => e.code);
                        client.close();
                        return { answer, refused, clientId: client.clientId };
                    }"""
                )
            finally:
                await browser.close()
        assert result["answer"] == {"sum": 6, "user": "alice"}
        assert result["refused"] == "bad_request"
        [seen] = backend.of("connect")
        assert seen.body["transport"] == "ws" and seen.headers["cookie"] == COOKIE
        assert [s.body["channel"] for s in backend.of("subscribe")] == ["room:lobby"]
