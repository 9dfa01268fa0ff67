"""The WebSocket transport end to end: a real server on loopback, the websockets client."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.serving import RunningServer, serve
from tests.wsclient import WS
from tidings.core.cursor import encode_cursor, encode_token
from tidings.core.position import Position

C_CURSOR = encode_token("c", Position("e", 1))
OTHER_CURSOR = encode_token("other", Position("e", 1))  # holds no position for "c"


async def publish(server: RunningServer, channel: str, data: Any, **extra: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.post("/api/publish", json={"channel": channel, "data": data, **extra})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_subscriber_receives_a_publication_made_through_the_api(server: RunningServer):
    async with await WS.open(server.ws_url) as ws:
        sub = await ws.request("subscribe", channel="chat:lobby")
        assert sub["op"] == "subscribed" and sub["offset"] == 0 and sub["recovered"] is True
        result = await publish(server, "chat:lobby", {"text": "hi"})
        [msg] = await ws.messages(1)
    assert msg["data"] == {"text": "hi"}
    assert msg["offset"] == result["offset"] == 1
    assert msg["epoch"] == result["epoch"] and msg["id"] == result["id"]
    assert msg["event"] == "message" and isinstance(msg["time"], int) and msg["cursor"]


async def test_two_subscribers_both_receive_every_message_in_order(server: RunningServer):
    async with await WS.open(server.ws_url) as a, await WS.open(server.ws_url) as b:
        await a.request("subscribe", channel="feed")
        await b.request("subscribe", channel="feed")
        for i in range(20):
            await publish(server, "feed", i)
        got_a = [m["data"] for m in await a.messages(20)]
        got_b = [m["data"] for m in await b.messages(20)]
    assert got_a == got_b == list(range(20))


async def test_resume_with_since_gets_exactly_the_missed_then_live(server: RunningServer):
    async with await WS.open(server.ws_url) as ws:
        await ws.request("subscribe", channel="news")
        for i in range(1, 6):
            await publish(server, "news", i)
        seen = await ws.messages(5)
    last = seen[-1]
    assert [m["offset"] for m in seen] == [1, 2, 3, 4, 5]
    for i in range(6, 11):
        await publish(server, "news", i)
    async with await WS.open(server.ws_url) as ws:
        sub = await ws.request(
            "subscribe", channel="news", since={"epoch": last["epoch"], "offset": last["offset"]}
        )
        assert sub["recovered"] is True and sub["offset"] == 10
        missed = await ws.messages(5)
        await publish(server, "news", 11)
        live = await ws.messages(1)
    assert [m["offset"] for m in missed + live] == list(range(6, 12))
    assert [m["data"] for m in missed + live] == list(range(6, 12))


async def test_subscribe_with_a_cursor_resumes_after_its_position(server: RunningServer):
    """``cursor`` works like ``since``, on WebSocket as on every HTTP transport; a cursor of
    several channels (an HTTP poll's) resumes each channel it names."""
    epochs = {}
    for i in range(1, 4):
        for channel in ("curs:a", "curs:b"):
            epochs[channel] = (await publish(server, channel, i))["epoch"]
    start = encode_cursor({ch: Position(epoch, 0) for ch, epoch in epochs.items()})
    async with httpx.AsyncClient(base_url=server.url) as http:
        first = (
            await http.get(
                "/poll",
                params=[
                    ("channel", "curs:a"),
                    ("channel", "curs:b"),
                    ("cursor", start),
                    ("timeout", "0"),
                    ("limit", "3"),
                ],
            )
        ).json()
    assert [(m["channel"], m["offset"]) for m in first["messages"]] == [
        ("curs:a", 1),
        ("curs:b", 1),
        ("curs:a", 2),
    ]
    async with await WS.open(server.ws_url) as ws:
        sub_a = await ws.request("subscribe", channel="curs:a", cursor=first["cursor"])
        got_a = await ws.messages(1)
        sub_b = await ws.request("subscribe", channel="curs:b", cursor=first["cursor"])
        got_b = await ws.messages(2)
    assert sub_a["op"] == sub_b["op"] == "subscribed" and sub_a["recovered"] is True
    assert [(m["channel"], m["offset"]) for m in got_a + got_b] == [
        ("curs:a", 3),
        ("curs:b", 2),
        ("curs:b", 3),
    ]


async def test_unknown_command_fields_are_ignored_and_known_ones_checked(server: RunningServer):
    async with await WS.open(server.ws_url) as ws:
        sub = await ws.request("subscribe", channel="fields", future_option={"x": 1})
        assert sub["op"] == "subscribed"
        bad = await ws.request("subscribe", channel="fields2", since="yesterday")
        assert bad["op"] == "error" and bad["code"] == "bad_request"


async def test_resume_older_than_history_says_not_recovered_without_duplicates(
    server: RunningServer,
):
    first = await publish(server, "tiny:x", 1)
    for i in range(2, 11):
        await publish(server, "tiny:x", i)
    async with await WS.open(server.ws_url) as ws:
        sub = await ws.request("subscribe", channel="tiny:x", since={"epoch": first["epoch"], "offset": 1})
        assert sub["recovered"] is False
        assert sub["requested"] == 2 and sub["available_from"] == 8
        survived = await ws.messages(3)
        await publish(server, "tiny:x", 11)
        live = await ws.messages(1)
    assert [m["offset"] for m in survived + live] == [8, 9, 10, 11]


async def test_resume_with_a_wrong_epoch_says_not_recovered_then_sends_what_history_has(
    server: RunningServer,
):
    await publish(server, "news", "a")
    async with await WS.open(server.ws_url) as ws:
        sub = await ws.request("subscribe", channel="news", since={"epoch": "AAAAAAAA", "offset": 1})
        assert sub["recovered"] is False and sub["requested"] == 2
        assert sub["available_from"] == 1
        await publish(server, "news", "b")
        msgs = await ws.messages(2)
    assert [m["data"] for m in msgs] == ["a", "b"]


async def test_resume_across_a_memory_node_restart_gets_a_gap_then_the_new_epoch_from_offset_1():
    with serve() as before:
        old = await publish(before, "news", "old")
    with serve() as after:  # memory broker: history lost, a new epoch
        for i in range(3):
            await publish(after, "news", i)
        async with await WS.open(after.ws_url) as ws:
            sub = await ws.request(
                "subscribe", channel="news", since={"epoch": old["epoch"], "offset": old["offset"]}
            )
            assert (sub["recovered"], sub["requested"], sub["available_from"]) == (False, 2, 1)
            assert sub["epoch"] != old["epoch"]
            missed = await ws.messages(3)
            await publish(after, "news", "live")
            live = await ws.messages(1)
    assert [(m["offset"], m["data"]) for m in missed + live] == [(1, 0), (2, 1), (3, 2), (4, "live")]


async def test_idempotent_publish_returns_the_same_offset_twice(server: RunningServer):
    one = await publish(server, "orders", {"n": 1}, idempotency_key="k-1")
    two = await publish(server, "orders", {"n": 1}, idempotency_key="k-1")
    other = await publish(server, "orders", {"n": 2}, idempotency_key="k-2")
    assert one["offset"] == two["offset"] == 1 and one["id"] == two["id"]
    assert two["duplicate"] is True and other["offset"] == 2


async def test_client_publish_ping_presence_history_and_unsubscribe(server: RunningServer):
    async with await WS.open(server.ws_url) as ws, await WS.open(server.ws_url) as other:
        await ws.request("subscribe", channel="chat:room")
        joined = await other.request("subscribe", channel="chat:room")
        assert joined["op"] == "subscribed"
        pub = await ws.request("publish", channel="chat:room", data={"t": "yo"}, event="said")
        assert pub["op"] == "published" and pub["offset"] == 1
        pong = await ws.request("ping")
        assert pong["op"] == "pong"
        presence = await ws.request("presence", channel="chat:room")
        assert len(presence["clients"]) == 2
        history = await ws.request("history", channel="chat:room", limit=10)
        assert [p["data"] for p in history["publications"]] == [{"t": "yo"}]
        [msg] = await other.messages(1)
        assert msg["event"] == "said"
        unsub = await ws.request("unsubscribe", channel="chat:room")
        assert unsub["op"] == "unsubscribed"
        leave = await other.recv()
        while leave["op"] != "leave":
            leave = await other.recv()
        assert leave["channel"] == "chat:room"


async def test_join_is_announced_to_present_subscribers(server: RunningServer):
    async with await WS.open(server.ws_url) as a:
        await a.request("subscribe", channel="chat:hall")
        async with await WS.open(server.ws_url) as b:
            await b.request("subscribe", channel="chat:hall")
            msg = await a.recv()
            while msg["op"] != "join":
                msg = await a.recv()
            assert msg["channel"] == "chat:hall" and msg["client"]["client"]


async def test_a_namespace_as_it_comes_sends_no_join_or_leave_and_keeps_no_presence():
    with serve() as server:  # the defaults, no namespace configured
        async with await WS.open(server.ws_url) as a, await WS.open(server.ws_url) as b:
            assert (await a.request("subscribe", channel="plain"))["op"] == "subscribed"
            assert (await b.request("subscribe", channel="plain"))["op"] == "subscribed"
            assert (await b.request("unsubscribe", channel="plain"))["op"] == "unsubscribed"
            await publish(server, "plain", "after")
            # a join or leave would be queued before the publication
            assert (await a.recv())["op"] == "message"
            refused = await a.request("presence", channel="plain")
            assert refused["op"] == "error" and refused["code"] == "forbidden"


async def test_join_leave_works_without_presence_and_stops_past_its_cap():
    ns = {"room": {"join_leave": True, "join_leave_max_subscribers": 2}}
    with serve(namespaces=ns) as server:
        async with (
            await WS.open(server.ws_url) as a,
            await WS.open(server.ws_url) as b,
            await WS.open(server.ws_url) as c,
        ):
            assert (await a.request("subscribe", channel="room:1"))["op"] == "subscribed"
            assert (await b.request("subscribe", channel="room:1"))["op"] == "subscribed"
            joined = await a.recv()
            assert joined["op"] == "join" and joined["client"]["client"]
            # a third subscriber is past the cap of 2: no join, no leave
            assert (await c.request("subscribe", channel="room:1"))["op"] == "subscribed"
            assert (await c.request("unsubscribe", channel="room:1"))["op"] == "unsubscribed"
            await publish(server, "room:1", "after")
            assert (await a.recv())["op"] == "message"
            assert (await b.recv())["op"] == "message"


async def test_a_subscriber_gets_no_join_for_itself(server: RunningServer):
    async with await WS.open(server.ws_url) as ws:  # chat: presence and join/leave on
        assert (await ws.request("subscribe", channel="chat:self"))["op"] == "subscribed"
        await publish(server, "chat:self", "after")
        assert (await ws.recv())["op"] == "message"
        present = await ws.request("presence", channel="chat:self")
        assert len(present["clients"]) == 1  # it is present all the same


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ('{"op":"dance","ref":1}', "bad_request"),
        ('{"ref":2}', "bad_request"),
        ('{"op":"subscribe","ref":3}', "bad_request"),
        ('{"op":"subscribe","ref":4,"channel":"no spaces"}', "bad_request"),
        ('{"op":"publish","ref":5,"channel":"x"}', "bad_request"),
        ("[1,2]", "bad_request"),
        ('{"op":"unsubscribe","ref":6,"channel":"never"}', "not_found"),
        ('{"op":"subscribe","ref":7,"channel":"c","since":{"epoch":"e","offset":-1}}', "bad_request"),
        ('{"op":"history","ref":8,"channel":"c","limit":0}', "bad_request"),
        (
            '{"op":"subscribe","ref":9,"channel":"c","cursor":"' + C_CURSOR + '",'
            '"since":{"epoch":"e","offset":1}}',
            "bad_request",
        ),
        ('{"op":"subscribe","ref":10,"channel":"c","cursor":"' + OTHER_CURSOR + '"}', "bad_request"),
        ('{"op":"subscribe","ref":11,"channel":"c","cursor":"!!not a cursor"}', "bad_request"),
        ('{"op":"subscribe","ref":12,"channel":"c","cursor":12}', "bad_request"),
    ],
)
async def test_bad_command_gets_an_error_reply_and_the_connection_survives(
    server: RunningServer, frame: str, code: str
):
    async with await WS.open(server.ws_url) as ws:
        await ws.conn.send(frame)
        err = await ws.recv()
        assert err["op"] == "error" and err["code"] == code and err["message"]
        sent = orjson.loads(frame)
        if isinstance(sent, dict) and "ref" in sent:
            assert err["ref"] == sent["ref"]
        assert (await ws.request("ping"))["op"] == "pong"


async def test_double_subscribe_is_a_conflict(server: RunningServer):
    async with await WS.open(server.ws_url) as ws:
        await ws.request("subscribe", channel="c")
        again = await ws.request("subscribe", channel="c")
    assert again["op"] == "error" and again["code"] == "conflict"


@pytest.mark.parametrize(
    ("payload", "code"),
    [("not json at all", 1007), (b"\x00\x01binary", 1003)],
)
async def test_invalid_frames_close_with_the_documented_code(
    server: RunningServer, payload: str | bytes, code: int
):
    async with await WS.open(server.ws_url) as ws:
        await ws.conn.send(payload)
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == code
    async with await WS.open(server.ws_url) as ws:  # the server keeps serving
        assert (await ws.request("ping"))["op"] == "pong"


async def test_oversize_frame_closes_with_1009():
    with serve(limits={"max_frame_bytes": 4096}) as server:
        async with await WS.open(server.ws_url) as ws:
            await ws.conn.send('{"op":"ping","pad":"' + "x" * 10000 + '"}')
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        async with await WS.open(server.ws_url) as ws:
            assert (await ws.request("ping"))["op"] == "pong"


async def test_publish_over_the_message_limit_is_refused():
    with serve(namespaces={"small": {"max_message_bytes": 100}}) as server:
        async with await WS.open(server.ws_url) as ws:
            reply = await ws.request("publish", channel="small:x", data="y" * 200)
    assert reply["op"] == "error" and reply["code"] == "too_large"


async def test_slow_subscriber_is_disconnected_and_others_are_unaffected():
    with serve(limits={"outbox_bytes": 65536}) as server:
        # Big enough to overflow the kernel's and both libraries' buffers, not just the outbox.
        payload = "z" * 60000
        # uncompressed: with permessage-deflate a frame of 60,000 z's is 80 bytes on the wire
        slow = await connect(server.ws_url, max_queue=1, compression=None)
        await slow.send('{"op":"subscribe","ref":1,"channel":"firehose"}')
        async with await WS.open(server.ws_url) as fast:
            await fast.request("subscribe", channel="firehose")
            await asyncio.wait_for(slow.recv(), 10)  # subscribed; then it stops reading

            async def publish_all() -> None:
                async with httpx.AsyncClient(base_url=server.url) as client:
                    for i in range(300):
                        r = await client.post(
                            "/api/publish", json={"channel": "firehose", "data": [i, payload]}
                        )
                        assert r.status_code == 200

            consumer = asyncio.create_task(fast.messages(300, timeout=20))
            await publish_all()
            got = await consumer
        assert [m["data"][0] for m in got] == list(range(300))
        received = 0
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(slow.recv(), 5)
                received += 1
        assert slow.close_code == 4008
        assert received < 300


async def test_closing_a_connection_unsubscribes_it(server: RunningServer):
    async with await WS.open(server.ws_url) as ws:
        await ws.request("subscribe", channel="gone")
        assert server.node.hub.subscriber_count("gone") == 1
    for _ in range(200):
        if server.node.hub.subscriber_count("gone") == 0:
            break
        await asyncio.sleep(0.01)
    assert server.node.hub.subscriber_count("gone") == 0
