from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.core.channels import (
    DEFAULT_NAMESPACE,
    MAX_CHANNEL_LENGTH,
    namespace_of,
    pattern_matches,
    validate_channel,
    validate_pattern,
)
from tidings.exceptions import BadRequest

from .strategies import CHANNEL_CHARS, channels

GRAMMAR = re.compile(r"[A-Za-z0-9_.:@/=-]{1,200}")


@pytest.mark.parametrize("name", ["chat:lobby", "a", "user:42:inbox", "x@y/z=w-v_u.t", "9" * 200])
def test_validate_channel_returns_a_valid_name(name: str):
    assert validate_channel(name) == name


@pytest.mark.parametrize(
    "name", ["", "a b", "chat:lobby\n", "é", "a*", "9" * 201, "a?b", "a#b", None, 42, b"chat"]
)
def test_validate_channel_refuses_names_outside_the_grammar(name: object):
    with pytest.raises(BadRequest, match="invalid channel name"):
        validate_channel(name)


def test_max_channel_length_is_200():
    assert MAX_CHANNEL_LENGTH == 200


@given(channels)
def test_validate_channel_accepts_every_name_of_the_grammar(name: str):
    assert validate_channel(name) == name


@given(st.text(max_size=210) | st.text(alphabet=CHANNEL_CHARS + "*é \n\t\x00", max_size=210))
def test_validate_channel_accepts_exactly_the_grammar(name: str):
    valid = GRAMMAR.fullmatch(name) is not None and name.isascii()
    try:
        validate_channel(name)
    except BadRequest:
        assert not valid
    else:
        assert valid


@pytest.mark.parametrize("pattern", ["chat:*", "*", "user:42:*", "a*b*c", "plain"])
def test_validate_pattern_accepts_names_with_stars(pattern: str):
    assert validate_pattern(pattern) == pattern


@pytest.mark.parametrize("pattern", ["", "a b", "x" * 201, None, "chat:?"])
def test_validate_pattern_refuses_invalid_patterns(pattern: object):
    with pytest.raises(BadRequest, match="invalid channel pattern"):
        validate_pattern(pattern)


@pytest.mark.parametrize(
    ("channel", "namespace"),
    [("chat:lobby", "chat"), ("user:42:inbox", "user"), ("lobby", DEFAULT_NAMESPACE), (":x", "")],
)
def test_namespace_is_the_part_before_the_first_colon(channel: str, namespace: str):
    assert namespace_of(channel) == namespace


@pytest.mark.parametrize(
    ("pattern", "channel", "matches"),
    [
        ("chat:lobby", "chat:lobby", True),
        ("chat:lobby", "chat:lobby2", False),
        ("chat:*", "chat:lobby", True),
        ("chat:*", "chat:", True),
        ("chat:*", "chatter", False),
        ("*", "anything", True),
        ("user:*:inbox", "user:42:inbox", True),
        ("user:*:inbox", "user:42:outbox", False),
        ("a.b*", "aXb", False),  # the dot is literal
        ("*:lobby", "chat:lobby", True),
    ],
)
def test_pattern_matches_stars_as_any_run_of_characters(pattern: str, channel: str, matches: bool):
    assert pattern_matches(pattern, channel) is matches


@given(channels)
def test_a_channel_matches_itself_and_the_star_pattern(name: str):
    assert pattern_matches(name, name)
    assert pattern_matches("*", name)
    assert pattern_matches(f"{name[:1]}*", name)
