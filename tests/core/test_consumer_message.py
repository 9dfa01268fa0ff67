"""``tidings.core.consumer_message``: a consumed message as a publish, or a dead letter."""

from __future__ import annotations

import pytest

from tidings.core.consumer_message import (
    DeadLetter,
    PublishRequest,
    backoff_delay,
    by_partition,
    check_message,
    dead_letter_for,
    parse_message,
)
from tidings.exceptions import BadRequest, Forbidden, Internal, TooLarge, Unavailable

KEY = "orders:17"


def test_a_message_to_one_channel_with_the_default_key_and_event():
    assert parse_message(b'{"channel": "orders:1", "data": {"a": 1}}', default_key=KEY) == PublishRequest(
        ("orders:1",), {"a": 1}, "message", KEY
    )


def test_the_message_s_own_event_and_key_win():
    body = '{"channel": "c", "data": null, "event": "paid", "idempotency_key": "k-1"}'
    assert parse_message(body, default_key=KEY) == PublishRequest(("c",), None, "paid", "k-1")


def test_a_broadcast_keeps_the_order_of_its_channels_without_repeats():
    request = check_message({"channels": ["b", "a", "b"], "data": 1}, default_key=KEY)
    assert request == PublishRequest(("b", "a"), 1, "message", KEY, broadcast=True)


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        (b"{not json", "bad_request", "not JSON"),
        (b"[1, 2]", "bad_request", "JSON object"),
        (b'{"channel": "c", "data": 1, "extra": 2}', "bad_request", "unknown field(s): extra"),
        (b'{"channel": "c"}', "bad_request", "data is missing"),
        (b'{"data": 1}', "bad_request", "either channel or channels"),
        (b'{"channel": "c", "channels": ["d"], "data": 1}', "bad_request", "either channel or channels"),
        (b'{"channels": [], "data": 1}', "bad_request", "list of 1-1000"),
        (b'{"channels": "c", "data": 1}', "bad_request", "list of 1-1000"),
        (b'{"channel": "bad channel", "data": 1}', "bad_request", "invalid channel name"),
        (b'{"channels": ["ok", 7], "data": 1}', "bad_request", "invalid channel name"),
        (b'{"channel": "c", "data": 1, "event": "a b"}', "bad_request", "event must be"),
        (b'{"channel": "c", "data": 1, "idempotency_key": ""}', "bad_request", "idempotency_key"),
        (b'{"channel": "c", "data": 1, "idempotency_key": 5}', "bad_request", "idempotency_key"),
    ],
)
def test_what_can_never_be_published_is_a_dead_letter_saying_why(body: bytes, code: str, words: str):
    result = parse_message(body, default_key=KEY)
    assert isinstance(result, DeadLetter)
    assert result.code == code
    assert words in result.message


def test_too_many_channels_is_a_dead_letter():
    result = check_message({"channels": [f"c{i}" for i in range(1001)], "data": 1}, default_key=KEY)
    assert isinstance(result, DeadLetter)


def test_a_key_over_200_characters_is_a_dead_letter():
    result = check_message({"channel": "c", "data": 1, "idempotency_key": "k" * 201}, default_key=KEY)
    assert isinstance(result, DeadLetter)
    assert check_message({"channel": "c", "data": 1, "idempotency_key": "k" * 200}, default_key=KEY)


def test_a_body_over_max_bytes_is_too_large_before_it_is_parsed():
    result = parse_message(b'{"channel": "c", "data": "xxxx"}', default_key=KEY, max_bytes=10)
    assert result == DeadLetter("too_large", "message of 32 bytes is over 10")
    assert isinstance(
        parse_message(b'{"channel":"c","data":1}', default_key=KEY, max_bytes=24), PublishRequest
    )


def test_channels_outside_the_allowed_patterns_are_forbidden():
    allow = ("orders:*", "dashboard")
    assert isinstance(
        check_message({"channel": "orders:9", "data": 1}, default_key=KEY, allow=allow), PublishRequest
    )
    assert isinstance(
        check_message({"channel": "dashboard", "data": 1}, default_key=KEY, allow=allow), PublishRequest
    )
    refused = check_message({"channels": ["orders:9", "admin"], "data": 1}, default_key=KEY, allow=allow)
    assert refused == DeadLetter("forbidden", "this consumer may not publish to 'admin'")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (BadRequest("no"), DeadLetter("bad_request", "no")),
        (TooLarge("big"), DeadLetter("too_large", "big")),
        (Forbidden("not yours"), DeadLetter("forbidden", "not yours")),
        (Unavailable("broker down"), None),
        (Internal("bug"), None),
        (ConnectionError("lost"), None),
    ],
)
def test_only_a_permanent_refusal_of_the_node_dead_letters(error: BaseException, expected: DeadLetter | None):
    assert dead_letter_for(error) == expected


def test_by_partition_groups_in_the_order_first_seen_and_keeps_each_group_s_order():
    messages = [("a", 1), ("b", 2), ("a", 3), ("c", 4), ("b", 5)]
    groups = by_partition(messages, lambda message: message[0])
    assert list(groups) == ["a", "b", "c"]
    assert groups["a"] == [("a", 1), ("a", 3)]
    assert groups["b"] == [("b", 2), ("b", 5)]


def test_backoff_doubles_up_to_the_cap_with_the_callers_jitter():
    delays = [backoff_delay(attempt, base=0.2, cap=1.0, jitter=0.0) for attempt in range(0, 6)]
    assert delays == [0.2, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff_delay(2, base=1.0, cap=10.0, jitter=0.1) == pytest.approx(2.2)
    assert backoff_delay(1, base=1.0, cap=10.0, jitter=-2.0) == 0.0
