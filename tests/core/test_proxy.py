"""The proxies' rules (tidings.core.proxy): requests, forwarded headers, answers, refresh time."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tidings.core.proxy import (
    UNCHANGED,
    BrokenAnswer,
    ConnectResult,
    ProxyDisconnect,
    ProxyKind,
    PublishResult,
    RefreshResult,
    RpcResult,
    SubscribeResult,
    forwarded_headers,
    parse_answer,
    refresh_delay,
    refusal,
    request_body,
)
from tidings.exceptions import Forbidden, Unavailable


def answer(kind: ProxyKind, value: Any, status: int = 200) -> Any:
    return parse_answer(kind, status, orjson.dumps(value))


# requests -------------------------------------------------------------------------------------


def test_a_connect_request_carries_client_transport_data_and_address_but_no_user_yet() -> None:
    body = orjson.loads(
        request_body(ProxyKind.CONNECT, client="c1", transport="ws", data={"a": 1}, remote_addr="10.0.0.7")
    )
    assert body == {"client": "c1", "transport": "ws", "data": {"a": 1}, "remote_addr": "10.0.0.7"}


def test_data_is_sent_as_null_and_other_absent_fields_are_left_out() -> None:
    body = orjson.loads(
        request_body(ProxyKind.CONNECT, client="c1", transport="sse", user="", data=None, remote_addr=None)
    )
    assert body == {"client": "c1", "transport": "sse", "user": "", "data": None}


def test_publish_and_rpc_requests_carry_their_fields() -> None:
    publish = request_body(ProxyKind.PUBLISH, client="c", transport="ws", user="u", channel="a:b", data=[1])
    assert orjson.loads(publish) == {
        "client": "c",
        "transport": "ws",
        "user": "u",
        "channel": "a:b",
        "data": [1],
    }
    rpc = request_body(ProxyKind.RPC, client="c", transport="ws", user="u", method="m", data=None)
    assert orjson.loads(rpc) == {"client": "c", "transport": "ws", "user": "u", "method": "m", "data": None}


def test_forwarded_headers_pick_the_listed_ones_and_set_x_forwarded_for() -> None:
    headers = {"cookie": "s=1", "authorization": "Bearer t", "x-forwarded-for": "6.6.6.6", "other": "x"}
    picked = forwarded_headers(["Cookie", "X-Request-ID", "X-Forwarded-For"], headers, "10.0.0.7")
    # the client's own X-Forwarded-For never goes through: anyone can write it
    assert picked == {"Cookie": "s=1", "X-Forwarded-For": "10.0.0.7"}
    assert forwarded_headers(["Authorization"], headers, None) == {"Authorization": "Bearer t"}


@pytest.mark.parametrize(
    ("expire_at", "now", "timeout", "delay"),
    [
        (1000.0, 0.0, 3.0, 996.0),  # long-lived: ask timeout + 1 s before the expiry
        (10.0, 8.0, 3.0, 1.0),  # little time left: at half of it
        (5.0, 9.0, 3.0, 0.0),  # already expired: at once
    ],
)
def test_the_refresh_proxy_is_asked_before_the_expiry(
    expire_at: float, now: float, timeout: float, delay: float
) -> None:
    assert refresh_delay(expire_at, now, timeout) == delay


# answers --------------------------------------------------------------------------------------


def test_a_connect_result_gives_user_expiry_info_and_channels() -> None:
    result = answer(
        ProxyKind.CONNECT,
        {"result": {"user": "alice", "expire_at": 1700000000, "info": {"n": 1}, "channels": ["a", "b", "a"]}},
    )
    assert result == ConnectResult("alice", 1700000000.0, {"n": 1}, ("a", "b"))
    assert answer(ProxyKind.CONNECT, {"result": {}}) == ConnectResult("", None, None, ())


def test_other_results() -> None:
    assert answer(ProxyKind.REFRESH, {"result": {"expire_at": 5.5, "info": 1}}) == RefreshResult(5.5, 1)
    assert answer(ProxyKind.SUBSCRIBE, {"result": {}}) == SubscribeResult()
    assert answer(ProxyKind.PUBLISH, {"result": {"data": None}}) == PublishResult(None)
    assert answer(ProxyKind.PUBLISH, {"result": {}}).data is UNCHANGED
    assert repr(UNCHANGED) == "UNCHANGED"
    assert answer(ProxyKind.RPC, {"result": {"data": [1, 2]}}) == RpcResult([1, 2])
    assert answer(ProxyKind.RPC, {"result": {}}) == RpcResult(None)


@pytest.mark.parametrize(
    ("code", "kept"),
    [
        ("forbidden", "forbidden"),
        ("unauthorized", "unauthorized"),
        ("not_found", "not_found"),
        ("odd", "forbidden"),
    ],
)
def test_an_error_answer_refuses_with_the_backends_code_as_403(code: str, kept: str) -> None:
    with pytest.raises(Forbidden) as info:
        answer(ProxyKind.SUBSCRIBE, {"error": {"code": code, "message": "no"}})
    assert (info.value.code, info.value.message, info.value.http_status) == (kept, "no", 403)


def test_an_error_without_message_says_its_code_and_unavailable_stays_temporary() -> None:
    with pytest.raises(Forbidden, match="forbidden"):
        answer(ProxyKind.CONNECT, {"error": {"code": "forbidden"}})
    with pytest.raises(Unavailable) as info:
        answer(ProxyKind.CONNECT, {"error": {"code": "unavailable", "message": "db down"}})
    assert not isinstance(info.value, BrokenAnswer) and info.value.temporary
    assert isinstance(refusal("conflict", "x"), Forbidden)


def test_a_disconnect_answer_ends_the_connection_with_the_backends_code() -> None:
    with pytest.raises(ProxyDisconnect) as info:
        answer(ProxyKind.CONNECT, {"disconnect": {"code": 4500, "reason": "banned"}})
    assert (int(info.value.reason.code), info.value.reason.reason, info.value.reason.reconnect) == (
        4500,
        "banned",
        False,
    )
    with pytest.raises(ProxyDisconnect) as info:
        answer(ProxyKind.CONNECT, {"disconnect": {"code": 4000}})
    assert info.value.reason.reason == "disconnected by the application"
    assert info.value.http_status == 403


@pytest.mark.parametrize(
    ("status", "body", "reason", "says"),
    [
        (500, b'{"result": {}}', "status", "HTTP 500"),
        (200, b"<html>oops</html>", "invalid", "not JSON"),
        (200, b"[1]", "invalid", "not a JSON object"),
        (200, b"{}", "invalid", 'no "result"'),
        (200, b'{"result": 1}', "invalid", 'no "result"'),
        (200, b'{"error": "no"}', "invalid", '"error" is not'),
        (200, b'{"error": {"message": "no"}}', "invalid", '"error" is not'),
        (200, b'{"disconnect": 4000}', "invalid", '"disconnect" is not'),
        (200, b'{"disconnect": {"code": 1000}}', "invalid", "4000 to 4999"),
        (200, b'{"disconnect": {"code": true}}', "invalid", "4000 to 4999"),
        (200, b'{"disconnect": {"code": 4000, "reason": 1}}', "invalid", "reason must be"),
        (200, b'{"result": {"user": 1}}', "invalid", "user must be"),
        (200, b'{"result": {"channels": "a"}}', "invalid", "channels must be"),
        (200, b'{"result": {"channels": ["bad name!"]}}', "invalid", "result is invalid"),
        (200, b'{"result": {"expire_at": "soon"}}', "invalid", "expire_at"),
        (200, b'{"result": {"expire_at": true}}', "invalid", "expire_at"),
    ],
)
def test_anything_else_is_a_broken_backend(status: int, body: bytes, reason: str, says: str) -> None:
    with pytest.raises(BrokenAnswer, match="the connect proxy is unavailable") as info:
        parse_answer(ProxyKind.CONNECT, status, body)
    assert info.value.reason == reason and says in info.value.message
    assert info.value.code == "unavailable" and info.value.http_status == 503


def test_an_infinite_expiry_is_broken() -> None:
    with pytest.raises(BrokenAnswer):
        parse_answer(ProxyKind.REFRESH, 200, b'{"result": {"expire_at": 1e999}}')
