"""SSE, HTTP streaming, long and short polling against a real server, with real clients."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import orjson
import pytest
import websockets

from tests.transports.conftest import ALLOWED_ORIGIN, TOKEN_SECRET, LiveServer, run_server
from tests.transports.readers import (
    PATHS,
    TRANSPORTS,
    PollReader,
    SSEReader,
    channel_name,
    dechunk,
    publish,
    reader,
    slow_consumers,
    wait_until,
)

DEADLINE = 15.0


@pytest.fixture
async def client(http_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
    async with httpx.AsyncClient(base_url=http_server.url, timeout=15, limits=limits) as c:
        yield c


def token(user: str, channels: dict[str, list[str]], ttl: float = 600) -> str:
    claims = {"sub": user, "exp": int(time.time() + ttl), "channels": channels}
    return jwt.encode(claims, TOKEN_SECRET, algorithm="HS256")


def offsets(items: list[dict[str, Any]]) -> list[int]:
    return [item["offset"] for item in items]


async def resume_then_live(
    kind: str, client: httpx.AsyncClient, channel: str, cursor: str, replayed: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Resume ``channel`` from ``cursor`` on ``kind``: the first ``replayed`` items, then the one
    live publication published after them."""
    sub = reader(kind, client, [channel], cursor)
    await sub.start()
    try:
        items = await sub.take(replayed)
        await publish(client, channel, "live")
        return items, await sub.take(1)
    finally:
        await sub.close()


# each transport ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_transport_delivers_live_publications_with_cursors(
    client: httpx.AsyncClient, kind: str
) -> None:
    channel = channel_name()
    sub = reader(kind, client, [channel])
    ready = await sub.start()
    assert ready["op"] == "ready"
    assert ready["cursor"]
    try:
        await publish(client, channel, *range(3))
        items = await sub.take(3)
    finally:
        await sub.close()
    assert offsets(items) == [1, 2, 3]
    assert [item["data"] for item in items] == [0, 1, 2]
    assert all(item["cursor"] and item["channel"] == channel for item in items)


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_transport_resumes_from_a_cursor_with_exactly_the_missed_messages(
    client: httpx.AsyncClient, kind: str
) -> None:
    channel = channel_name()
    await publish(client, channel, "a", "b", "c")
    cursor = (await client.get("/poll", params={"channel": channel, "timeout": 0})).json()["cursor"]
    await publish(client, channel, *range(4, 9))  # missed: offsets 4..8
    sub = reader(kind, client, [channel], cursor)
    await sub.start()
    try:
        missed = await sub.take(5)
        await publish(client, channel, "live")
        live = await sub.take(1)
    finally:
        await sub.close()
    assert offsets(missed) == [4, 5, 6, 7, 8]
    assert offsets(live) == [9]
    assert live[0]["data"] == "live"


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_transport_reports_a_gap_when_history_no_longer_reaches_back(
    client: httpx.AsyncClient, kind: str
) -> None:
    channel = channel_name("tiny")
    await publish(client, channel, 1)
    cursor = (await client.get("/poll", params={"channel": channel, "timeout": 0})).json()["cursor"]
    await publish(client, channel, *range(2, 8))  # history keeps 5..7 only
    items, live = await resume_then_live(kind, client, channel, cursor, 4)
    gap = items[0]
    assert gap["op"] == "gap"
    assert (gap["channel"], gap["requested"], gap["available_from"]) == (channel, 2, 5)
    assert offsets(items[1:]) == [5, 6, 7]
    assert offsets(live) == [8]


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_transport_resumes_across_an_epoch_change_with_a_gap_then_the_new_epoch(
    engine: str, kind: str
) -> None:
    channel = channel_name()
    with run_server() as before:
        async with httpx.AsyncClient(base_url=before.url, timeout=DEADLINE) as client:
            await publish(client, channel, "old")
            answer = await client.get("/poll", params={"channel": channel, "timeout": 0})
            cursor = answer.json()["cursor"]
    with run_server() as after:  # memory broker: history lost, a new epoch
        async with httpx.AsyncClient(base_url=after.url, timeout=DEADLINE) as client:
            await publish(client, channel, "a", "b", "c")
            items, live = await resume_then_live(kind, client, channel, cursor, 4)
    gap = items[0]
    assert gap["op"] == "gap"
    assert (gap["channel"], gap["requested"], gap["available_from"]) == (channel, 2, 1)
    assert [(m["offset"], m["data"]) for m in items[1:] + live] == [(1, "a"), (2, "b"), (3, "c"), (4, "live")]
    assert {m["epoch"] for m in items[1:]} == {gap["epoch"]}


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_transport_refuses_a_cursor_naming_a_channel_not_subscribed(
    client: httpx.AsyncClient, kind: str
) -> None:
    channel = channel_name("news")
    await publish(client, channel, 1)
    cursor = (await client.get("/poll", params={"channel": channel, "timeout": 0})).json()["cursor"]
    # A cut cursor can still decode, to another channel: "…news:1a2b3c" becomes "…news:1a2".
    cut = cursor[: len(cursor) - len(cursor) % 4 - 4]
    for wanted, given in ((channel, cut), ("other", cursor)):
        params = {"channel": wanted, "cursor": given, **({"timeout": "0"} if kind == "poll" else {})}
        response = await client.get(PATHS[kind], params=params)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "bad_request"
        assert "channel" in error["message"] and "not include" in error["message"]


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_transport_refuses_a_bad_cursor_with_a_json_400(client: httpx.AsyncClient, kind: str) -> None:
    params = {"channel": "c", "cursor": "not*a*cursor"}
    if kind == "poll":
        params["timeout"] = "0"
    response = await client.get(PATHS[kind], params=params)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"


@pytest.mark.parametrize(
    ("kind", "query"),
    [
        *(
            (kind, query)
            for kind in TRANSPORTS
            for query in ("", "channel=bad%20name", "channel=c&token=a&token=b", "channel=c&cursor=!")
        ),
        # timeout and limit are the polls' own parameters (unknown to the streams, so ignored there)
        *(
            (kind, query)
            for kind in ("longpoll", "poll")
            for query in (
                "channel=c&timeout=soon",
                "channel=c&timeout=-1",
                "channel=c&limit=0",
                "channel=c&timeout=1&timeout=2",
            )
        ),
    ],
)
async def test_transport_refuses_bad_parameters_with_a_json_400(
    client: httpx.AsyncClient, kind: str, query: str
) -> None:
    """Known parameters are checked strictly: a bad one is refused, never ignored."""
    response = await client.get(f"{PATHS[kind]}?{query}")
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "bad_request"


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_transport_ignores_unknown_parameters_such_as_a_cache_buster(
    client: httpx.AsyncClient, kind: str
) -> None:
    """jQuery and many fetch wrappers add ``_=<time>``: unknown parameters are ignored on every
    transport (known ones are still checked, above)."""
    params = {"channel": channel_name(), "_": "1733580000000", "future": "x"}
    if kind in ("longpoll", "poll"):
        params["timeout"] = "0.05" if kind == "longpoll" else "0"
        response = await client.get(PATHS[kind], params=params)
        assert response.status_code == 200, response.text
        assert response.json()["messages"] == []
        return
    async with client.stream("GET", PATHS[kind], params=params) as response:
        assert response.status_code == 200
        async with asyncio.timeout(5):
            first = await anext(response.aiter_text())
    assert "ready" in first


# SSE specifics ----------------------------------------------------------------------------------


async def test_sse_headers_retry_and_ready_come_first(client: httpx.AsyncClient) -> None:
    channel = channel_name()
    async with client.stream("GET", "/sse", params={"channel": channel}) as response:
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        text = ""
        async with asyncio.timeout(5):
            async for chunk in response.aiter_text():
                text += chunk
                if ": heartbeat" in text:
                    break
    ready = text.split("\n\n")[0].split("\n")  # retry: opens the ready notice's block
    assert ready[0] == "retry: 100"
    assert ready[1].startswith("id: ")
    assert ready[2] == "event: ready"
    data = orjson.loads(ready[3].removeprefix("data: "))
    assert data["channels"][channel]["offset"] == 0
    assert data["cursor"] == ready[1].removeprefix("id: ")


async def test_sse_resumes_from_last_event_id_and_merges_cursors(client: httpx.AsyncClient) -> None:
    one, two = channel_name(), channel_name()
    await publish(client, one, 1)
    await publish(client, two, 1)
    first = (await client.get("/poll", params={"channel": one, "timeout": 0})).json()["cursor"]
    both = (await client.get("/poll", params=[("channel", one), ("channel", two), ("timeout", 0)])).json()[
        "cursor"
    ]
    await publish(client, one, 2)
    await publish(client, two, 2)
    params = [("channel", one), ("channel", two), ("cursor", first)]
    headers = {"Last-Event-ID": both}
    async with client.stream("GET", "/sse", params=params, headers=headers) as response:
        body = b""
        async with asyncio.timeout(5):
            async for chunk in response.aiter_bytes():
                body += chunk
                if body.count(b"event: message") == 2:
                    break
    events = [e for e in body.split(b"\n\n") if b"event: message" in e]
    pubs = [orjson.loads(e.split(b"data: ", 1)[1]) for e in events]
    assert sorted((p["channel"], p["offset"]) for p in pubs) == sorted([(one, 2), (two, 2)])
    for event, pub in zip(events, pubs, strict=True):
        assert event.startswith(b"id: " + pub["cursor"].encode())
        assert len(pub["cursor"].split(".")) == 2  # the stream's composite cursor


async def test_sse_splits_multiline_data_and_never_lets_a_publication_forge_a_notice(
    client: httpx.AsyncClient,
) -> None:
    channel = channel_name()
    sub = SSEReader(client, [channel])
    await sub.start()
    try:
        for event in ("gap", "ready"):
            response = await client.post(
                "/api/publish", json={"channel": channel, "data": "x\ny\r\nz", "event": event}
            )
            assert response.status_code == 200
        items = await sub.take(2)
    finally:
        await sub.close()
    assert [item.get("op") for item in items] == [None, None]
    assert [item["sse_event"] for item in items] == ["message", "message"]
    assert [item["event"] for item in items] == ["gap", "ready"]
    assert items[0]["data"] == "x\ny\r\nz"


async def test_sse_answers_cors_preflight_and_echoes_allowed_origins(client: httpx.AsyncClient) -> None:
    preflight = await client.options(
        "/sse",
        headers={
            "Origin": ALLOWED_ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "last-event-id",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "Last-Event-ID" in preflight.headers["access-control-allow-headers"]
    refused = await client.get("/poll?channel=c&timeout=0", headers={"Origin": "http://evil.example"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    allowed = await client.get("/poll?channel=c&timeout=0", headers={"Origin": ALLOWED_ORIGIN})
    assert allowed.headers["access-control-allow-origin"] == ALLOWED_ORIGIN


@pytest.mark.parametrize("path", ["/sse", "/stream", "/poll"])
async def test_preflight_allows_what_the_route_takes_and_nothing_more(
    client: httpx.AsyncClient, path: str
) -> None:
    allowed = await client.options(
        path,
        headers={
            "Origin": ALLOWED_ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, last-event-id, if-none-match",
        },
    )
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-methods"] == "GET, OPTIONS"
    assert (
        allowed.headers["access-control-allow-headers"]
        == "Authorization, Last-Event-ID, If-None-Match, Cache-Control"
    )
    for method, asked in [
        ("POST", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("GET", "content-type"),
        ("GET", "idempotency-key"),
    ]:
        refused = await client.options(
            path,
            headers={
                "Origin": ALLOWED_ORIGIN,
                "Access-Control-Request-Method": method,
                **({"Access-Control-Request-Headers": asked} if asked else {}),
            },
        )
        assert refused.status_code == 403, (method, asked)
        assert "access-control-allow-origin" not in refused.headers


# authentication, limits, lifecycle ------------------------------------------------------------


@pytest.mark.parametrize("kind", TRANSPORTS)
async def test_transport_checks_tokens_and_permissions(client: httpx.AsyncClient, kind: str) -> None:
    path = PATHS[kind]
    base = "timeout=0&" if kind == "poll" else ""
    forbidden = await client.get(f"{path}?{base}channel=private:x")
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "forbidden"
    bad = await client.get(f"{path}?{base}channel=c&token=garbage")
    assert bad.status_code == 401
    assert bad.json()["error"]["code"] == "unauthorized"
    good = token("alice", {"private:*": ["subscribe"]})
    if kind == "poll":
        ok = await client.get(f"{path}?{base}channel=private:x", headers={"Authorization": f"Bearer {good}"})
        assert ok.status_code == 200
        return
    extra = "&timeout=0.1" if kind == "longpoll" else ""
    async with client.stream("GET", f"{path}?channel=private:x&token={good}{extra}") as response:
        assert response.status_code == 200


async def test_streams_are_counted_and_ended_by_a_disconnect_of_their_user(
    http_server: LiveServer, client: httpx.AsyncClient
) -> None:
    channel = channel_name()
    good = token("bob", {"*": ["subscribe"]})
    sse = SSEReader(client, [channel])
    sse.client = httpx.AsyncClient(
        base_url=http_server.url, timeout=15, headers={"Authorization": f"Bearer {good}"}
    )
    try:
        await sse.start()
        info = (await client.get("/api/info")).json()
        assert info["connections"].get("sse", 0) >= 1
        answer = await client.post("/api/disconnect", json={"user": "bob"})
        assert answer.json()["disconnected"] == 1
        farewell = await sse.next_item()
        assert farewell["op"] == "disconnect"
    finally:
        await sse.close()
        await sse.client.aclose()


@pytest.mark.parametrize("kind", ["sse", "stream"])
async def test_the_close_log_says_who_ended_a_stream(
    kind: str, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that leaves is logged as ``by=client`` (1001); the server's disconnect of a user
    as ``by=server`` with its code."""
    caplog.set_level(logging.INFO, logger="tidings.connections")
    user = f"closer-{kind}"
    left, ended = channel_name(), channel_name()
    for channel, end in ((left, "client"), (ended, "server")):
        sub = reader(kind, client, [channel])
        sub.client = httpx.AsyncClient(
            base_url=str(client.base_url),
            timeout=15,
            headers={"Authorization": f"Bearer {token(user, {'*': ['subscribe']})}"},
        )
        try:
            await sub.start()
            if end == "server":
                await client.post("/api/disconnect", json={"user": user})
        finally:
            await sub.close()
            await sub.client.aclose()

    def closes() -> list[dict[str, Any]]:
        return [
            r.fields
            for r in caplog.records  # type: ignore[attr-defined]
            if getattr(r, "fields", {}).get("event") == "close" and r.fields.get("user") == user
        ]  # type: ignore[attr-defined]

    await wait_until(lambda: len(closes()) >= 2, "two close lines")
    by_client, by_server = closes()[:2]
    assert (by_client["code"], by_client["by"]) == (1001, "client"), by_client
    assert (by_server["code"], by_server["by"]) == (1008, "server"), by_server


async def test_a_draining_node_refuses_new_streams_with_503(
    http_server: LiveServer, client: httpx.AsyncClient
) -> None:
    http_server.node.draining = True
    try:
        response = await client.get("/sse?channel=c")
    finally:
        http_server.node.draining = False
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"


async def test_stream_sends_heartbeat_lines_while_idle(client: httpx.AsyncClient) -> None:
    async with client.stream("GET", "/stream", params={"channel": channel_name()}) as response:
        assert response.headers["content-type"] == "application/x-ndjson"
        lines = []
        async with asyncio.timeout(5):
            async for line in response.aiter_lines():
                lines.append(orjson.loads(line))
                if lines[-1].get("op") == "heartbeat":
                    break
    assert lines[0]["op"] == "ready"


# polling specifics ------------------------------------------------------------------------------


async def test_long_poll_without_cursor_waits_for_the_next_publication(
    http_server: LiveServer, client: httpx.AsyncClient
) -> None:
    channel = channel_name()
    await publish(client, channel, "old")
    held = asyncio.ensure_future(client.get("/poll", params={"channel": channel, "timeout": 5}))
    await wait_until(lambda: http_server.node.hub.subscriber_count(channel) == 1, "a held poll")
    await publish(client, channel, "new")
    answer = (await held).json()
    assert [m["data"] for m in answer["messages"]] == ["new"]
    assert answer["cursor"] == answer["messages"][0]["cursor"]
    assert answer["gaps"] == []


async def test_long_poll_answers_empty_at_its_timeout(client: httpx.AsyncClient) -> None:
    started = time.monotonic()
    response = await client.get("/poll", params={"channel": channel_name(), "timeout": 0.3})
    assert 0.25 < time.monotonic() - started < 3
    assert response.json()["messages"] == []


async def test_long_poll_batches_up_to_limit_and_cursor_follows_the_last_one(
    client: httpx.AsyncClient,
) -> None:
    channel = channel_name()
    cursor = (await client.get("/poll", params={"channel": channel, "timeout": 0})).json()["cursor"]
    await publish(client, channel, *range(5))
    answer = (
        await client.get("/poll", params={"channel": channel, "cursor": cursor, "timeout": 5, "limit": 3})
    ).json()
    assert offsets(answer["messages"]) == [1, 2, 3]
    rest = (
        await client.get("/poll", params={"channel": channel, "cursor": answer["cursor"], "timeout": 5})
    ).json()
    assert offsets(rest["messages"]) == [4, 5]


async def test_a_client_leaving_a_held_long_poll_leaves_nothing_behind(http_server: LiveServer) -> None:
    channel = channel_name()
    node = http_server.node
    async with httpx.AsyncClient(base_url=http_server.url) as leaving:
        held = asyncio.ensure_future(leaving.get("/poll", params={"channel": channel, "timeout": 10}))
        await wait_until(lambda: node.hub.subscriber_count(channel) == 1, "a held poll")
        held.cancel()
    await wait_until(lambda: node.hub.subscriber_count(channel) == 0, "the hub to forget it")
    await wait_until(lambda: "longpoll" not in node.connection_counts(), "the node to forget it")


async def test_a_held_long_poll_is_answered_when_its_token_expires(
    http_server: LiveServer, client: httpx.AsyncClient
) -> None:
    """The token's expiry ends the hold like its timeout (machines/poll.py): the answer has what
    the poll has and its cursor, the poll has left the hub, and the next poll with the same
    token is refused 401, so the client fetches a new token and resumes from the cursor."""
    channel = channel_name()
    expiring = token("expiring-poller", {"*": ["subscribe"]}, ttl=2)  # 1 to 2 s from now
    headers = {"Authorization": f"Bearer {expiring}"}
    async with asyncio.timeout(8):  # the hold is 10 s: the expiry comes first
        response = await client.get("/poll", params={"channel": channel, "timeout": 10}, headers=headers)
    assert response.status_code == 200
    body = response.json()
    assert body["messages"] == [] and body["gaps"] == [] and body["cursor"]
    assert http_server.node.hub.subscriber_count(channel) == 0
    again = await client.get(
        "/poll", params={"channel": channel, "cursor": body["cursor"], "timeout": 10}, headers=headers
    )
    assert again.status_code == 401
    assert again.json()["error"]["code"] == "unauthorized"


async def test_500_concurrent_long_polls_are_released_by_one_publish(
    http_server: LiveServer, client: httpx.AsyncClient
) -> None:
    channel = channel_name()
    polls = [
        asyncio.ensure_future(client.get("/poll", params={"channel": channel, "timeout": 9}))
        for _ in range(500)
    ]
    await wait_until(
        lambda: http_server.node.hub.subscriber_count(channel) == 500, "500 held polls", deadline=30
    )
    await publish(client, channel, "wake")
    answers = [response.json() for response in await asyncio.gather(*polls)]
    assert all([m["data"] for m in a["messages"]] == ["wake"] for a in answers)


async def test_short_poll_without_cursor_answers_the_current_position(client: httpx.AsyncClient) -> None:
    channel = channel_name()
    await publish(client, channel, 1, 2)
    response = await client.get("/poll", params={"channel": channel, "timeout": 0})
    body = response.json()
    assert body["messages"] == []
    assert body["gaps"] == []
    assert "no-cache" in response.headers["cache-control"]
    since = await client.get("/poll", params={"channel": channel, "timeout": 0, "cursor": body["cursor"]})
    assert since.json()["cursor"] == body["cursor"]


async def test_short_poll_with_the_current_etag_gets_304_with_an_empty_body(
    client: httpx.AsyncClient,
) -> None:
    channel = channel_name()
    params = {"channel": channel, "timeout": 0}
    first = await client.get("/poll", params=params)
    etag = first.headers["etag"]
    same = await client.get("/poll", params=params, headers={"If-None-Match": etag})
    assert same.status_code == 304
    assert same.content == b""
    await publish(client, channel, "news")
    cursor = first.json()["cursor"]
    changed = await client.get("/poll", params={**params, "cursor": cursor}, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert [m["data"] for m in changed.json()["messages"]] == ["news"]
    assert changed.headers["etag"] != etag


# across transports ----------------------------------------------------------------------------


async def test_a_client_moves_across_every_transport_without_loss_or_duplicates(
    http_server: LiveServer, client: httpx.AsyncClient
) -> None:
    channel = channel_name()
    await publish(client, channel, *range(1, 13))
    seen: list[int] = []
    async with websockets.connect(f"ws://127.0.0.1:{http_server.port}/ws") as ws:
        await ws.send(
            orjson.dumps(
                {
                    "op": "subscribe",
                    "channel": channel,
                    "since": {"epoch": http_server.node.broker.epoch, "offset": 0},
                }
            ).decode()
        )
        cursor = ""
        while len(seen) < 5:
            frame = orjson.loads(await ws.recv())
            if frame["op"] == "message":
                seen.append(frame["data"])
                cursor = frame["cursor"]
    for kind, count in (("sse", 5), ("longpoll", 5), ("poll", 5)):
        sub = reader(kind, client, [channel], cursor)
        await sub.start()
        try:
            if kind == "longpoll":  # 11, 12 from history, then live ones
                await publish(client, channel, *range(13, 21))
            items = await sub.take(count)
        finally:
            await sub.close()
        seen.extend(item["data"] for item in items)
        cursor = items[-1]["cursor"]
    assert seen == list(range(1, 21))


async def test_poll_reader_round_trip_uses_the_cursor_of_each_answer(client: httpx.AsyncClient) -> None:
    channel = channel_name()
    poller = PollReader(client, [channel], timeout=0)
    await poller.start()
    try:
        await publish(client, channel, "x", "y")
        assert [item["data"] for item in await poller.take(2)] == ["x", "y"]
    finally:
        await poller.close()


async def test_a_stream_that_is_not_read_is_ended_as_a_slow_consumer(engine: str) -> None:
    """A client that stops reading fills its socket, then the outbox: the stream ends with a
    4008 notice behind what the socket held, and the node forgets it."""
    channel = channel_name()
    with run_server(limits={"outbox_bytes": 65536}) as small:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(DEADLINE)
        sock.connect(("127.0.0.1", small.port))
        sock.sendall(f"GET /stream?channel={channel} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        received = sock.recv(4096)  # the head and the ready line; then nothing is read
        async with httpx.AsyncClient(base_url=small.url, timeout=10) as http:
            for i in range(300):
                await publish(http, channel, "x" * 60000)
                if i % 5 == 4 and await slow_consumers(http, "stream"):
                    break
            else:
                raise AssertionError("the stream never overflowed")
            with sock:  # up to the response's last chunk (or the connection's end)
                while not received.endswith(b"\r\n0\r\n\r\n") and (
                    chunk := await asyncio.to_thread(sock.recv, 1 << 20)
                ):
                    received += chunk
            assert await slow_consumers(http, "stream") == 1
            await wait_until(
                lambda: small.node.connection_counts().get("stream", 0) == 0, "the stream to leave the node"
            )
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    lines = dechunk(body).splitlines()
    farewell = orjson.loads(lines[-1])
    assert farewell == {"op": "disconnect", "code": 4008, "reason": farewell["reason"], "reconnect": True}


# static files ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/static/tidings.d.ts", "text/plain; charset=utf-8"),
        ("/static/tidings.js", "text/javascript; charset=utf-8"),
        ("/pages/style.css", "text/css; charset=utf-8"),
    ],
)
async def test_static_files_have_fixed_content_types_on_both_engines(
    client: httpx.AsyncClient, path: str, content_type: str
) -> None:
    # Not the machine's mimetypes: there .ts may be text/vnd.trolltech.linguist or video/mp2t.
    answer = await client.get(path)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == content_type


async def test_the_client_library_may_be_imported_by_a_page_of_another_origin(
    client: httpx.AsyncClient,
) -> None:
    # an application's page (its own origin) imports tidings.js as a module script: CORS applies
    answer = await client.get("/static/tidings.js", headers={"Origin": "http://app.example"})
    assert answer.headers["access-control-allow-origin"] == "*"
    page = await client.get("/pages/style.css", headers={"Origin": "http://app.example"})
    assert "access-control-allow-origin" not in page.headers  # the demo pages are tidings' own
