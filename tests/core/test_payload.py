"""The rule on publication data (tidings.core.payload): JSON, at most max_depth levels, at most
the namespace's max_message_bytes; and stored data too deep to deliver comes back withheld."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tidings.core.events import Publication
from tidings.core.payload import (
    COUNT_BELOW,
    ENCODER_DEPTH,
    MAX_DELIVERABLE_DEPTH,
    WITHHELD_EVENT,
    DataRules,
    deliverable,
    publication_from_json,
)
from tidings.core.permissions import NamespaceOptions
from tidings.exceptions import BadRequest, TooLarge

OPTIONS = NamespaceOptions(max_message_bytes=100)


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


@pytest.mark.parametrize("max_depth", [1, 64, 128])
def test_data_up_to_max_depth_is_accepted_and_one_level_more_is_refused(max_depth: int) -> None:
    rules = DataRules(max_depth)
    options = NamespaceOptions(max_message_bytes=10_000)
    data = nested(max_depth)
    assert orjson.loads(rules.encode("a", data, options)) == data
    with pytest.raises(BadRequest, match=f"deeper than {max_depth} levels"):
        rules.encode("a", nested(max_depth + 1), options)


@pytest.mark.parametrize("depth", [255, 500, 1023])
def test_data_deeper_than_the_encoder_writes_is_refused_as_too_deep(depth: int) -> None:
    with pytest.raises(BadRequest, match="deeper than 64 levels"):
        DataRules(64).encode("a", nested(depth), NamespaceOptions())


def test_a_long_body_is_checked_exactly_too() -> None:
    rules = DataRules(64)
    options = NamespaceOptions(max_message_bytes=100_000)
    long_text = "x" * (COUNT_BELOW + 1)
    shallow = nested(64, long_text)
    assert rules.encode("a", shallow, options) == orjson.dumps(shallow)
    with pytest.raises(BadRequest, match="deeper than 64 levels"):
        rules.encode("a", nested(65, long_text), options)
    with pytest.raises(TooLarge, match="100001 bytes"):
        rules.encode("a", "y" * 99_999, options)


def test_the_rule_is_the_same_whatever_came_before() -> None:
    # After a long body the next is encoded wrapped at once: only the cost may differ.
    rules = DataRules(64)
    options = NamespaceOptions(max_message_bytes=100_000)
    long_text = "x" * (COUNT_BELOW + 1)
    sequence = [
        (nested(64, long_text), True),
        (nested(65), False),
        (nested(64), True),
        (nested(65, long_text), False),
        (nested(65, long_text), False),
        (nested(64, long_text), True),
        ({"a": 1}, True),
        (nested(64, long_text), True),
        (nested(300), False),
        (nested(64, long_text), True),
        ("short", True),
    ]
    for data, accepted in sequence:
        if accepted:
            assert rules.encode("a", data, options) == orjson.dumps(data)
        else:
            with pytest.raises(BadRequest, match="deeper than 64 levels"):
                rules.encode("a", data, options)


def test_many_brackets_that_do_not_nest_are_accepted() -> None:
    flat = [[1]] * 40 + ["[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["]
    assert orjson.loads(DataRules(2).encode("a", flat, NamespaceOptions())) == flat


@pytest.mark.parametrize("data", [{1: 2}, 2**70, {"s": {1, 2}}])
def test_data_that_is_not_json_is_refused(data: Any) -> None:
    with pytest.raises(BadRequest, match="not JSON"):
        DataRules(64).encode("a", data, NamespaceOptions())


def test_data_over_the_namespace_limit_is_too_large_naming_limit_and_namespace() -> None:
    rules = DataRules(64)
    assert rules.encode("chat:a", "x" * 98, OPTIONS) == b'"' + b"x" * 98 + b'"'
    with pytest.raises(TooLarge, match=r"101 bytes, over the 100 bytes .* namespace 'chat'"):
        rules.encode("chat:a", "x" * 99, OPTIONS)


def test_the_reused_wrapper_keeps_no_reference_to_the_data() -> None:
    rules = DataRules(4)
    with pytest.raises(BadRequest):
        rules.encode("a", nested(10), NamespaceOptions())
    assert rules._inner == [None]


def test_max_depth_outside_what_every_reply_carries_is_refused() -> None:
    with pytest.raises(ValueError, match="max_depth"):
        DataRules(129)


def test_deliverable_draws_the_line_where_the_deepest_reply_still_encodes() -> None:
    assert deliverable(nested(MAX_DELIVERABLE_DEPTH))
    assert not deliverable(nested(MAX_DELIVERABLE_DEPTH + 1))
    # the WebSocket history reply: reply object, publications list, publication object
    orjson.dumps({"publications": [{"data": nested(MAX_DELIVERABLE_DEPTH)}]})
    assert MAX_DELIVERABLE_DEPTH + 3 <= ENCODER_DEPTH


def stored(data: Any) -> bytes:
    return orjson.dumps(Publication("c", 7, "ep", "id1", 5, "message", data).to_dict())


def test_a_stored_publication_decodes_unchanged() -> None:
    publication = publication_from_json(stored({"deep": nested(MAX_DELIVERABLE_DEPTH - 1)}))
    assert publication == Publication(
        "c", 7, "ep", "id1", 5, "message", {"deep": nested(MAX_DELIVERABLE_DEPTH - 1)}
    )


def test_a_short_stored_publication_decodes_unchanged_from_bytes_or_text() -> None:
    # too short to nest past MAX_DELIVERABLE_DEPTH: taken as it is, brackets uncounted
    raw = stored(nested(3))
    assert len(raw) <= 2 * MAX_DELIVERABLE_DEPTH
    expected = Publication("c", 7, "ep", "id1", 5, "message", nested(3))
    assert publication_from_json(raw) == publication_from_json(raw.decode()) == expected


def test_a_stored_publication_with_many_brackets_but_shallow_data_decodes_unchanged() -> None:
    wide = [[{}] for _ in range(MAX_DELIVERABLE_DEPTH)]  # three brackets a level, two levels deep
    assert publication_from_json(stored(wide).decode()).data == wide


def test_a_stored_publication_too_deep_to_deliver_is_withheld_keeping_its_place() -> None:
    publication = publication_from_json(stored(nested(253)))
    assert (publication.channel, publication.offset, publication.epoch, publication.id, publication.time) == (
        "c",
        7,
        "ep",
        "id1",
        5,
    )
    assert publication.event == WITHHELD_EVENT
    assert publication.data["error"]["code"] == "internal"
    orjson.dumps({"op": "history", "publications": [publication.to_dict()]})
