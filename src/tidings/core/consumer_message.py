"""One consumed message (an outbox row, a stream entry, a queue message) as a publish, sans-I/O.

Every consumer kind hands what it read to :func:`parse_message` (the message's bytes: a JSON
object) or :func:`check_message` (an object already decoded, e.g. built from an outbox row's
columns). Either returns a :class:`PublishRequest` for the node's one publish door, or a
:class:`DeadLetter` saying why the message can never be published, so that it is set aside with
its error and never blocks the messages behind it.

The message shape (``docs/reference/consumers.md``)::

    {"channel": "orders:42", "data": <any JSON>, "event"?: "created", "idempotency_key"?: "..."}
    {"channels": ["a", "b"], "data": ..., ...}                                # a broadcast

Exactly once into the hub: a message without an ``idempotency_key`` is published with the
``default_key`` its consumer gives (the consumer's name and the row id or message id), so a
message published again after a crash between publish and acknowledgement is recognised as the
duplicate it is.

A publish that fails is either permanent (the node refused the message: dead-letter it) or
temporary (the broker is down: keep it, retry later); :func:`dead_letter_for` tells which.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from tidings.core.channels import pattern_matches, validate_channel
from tidings.core.commands import validate_event_name
from tidings.exceptions import TidingsError

__all__ = [
    "MAX_KEY_LENGTH",
    "DeadLetter",
    "PublishRequest",
    "backoff_delay",
    "by_partition",
    "check_message",
    "dead_letter_for",
    "parse_message",
]

#: Longest ``idempotency_key`` accepted (as on ``POST /api/publish``).
MAX_KEY_LENGTH = 200
_FIELDS = frozenset({"channel", "channels", "data", "event", "idempotency_key"})
_MAX_CHANNELS = 1000

M = TypeVar("M")


@dataclass(frozen=True, slots=True)
class PublishRequest:
    """A message to publish: to ``channels`` (one, or several for a broadcast)."""

    channels: tuple[str, ...]
    data: Any
    event: str
    idempotency_key: str
    broadcast: bool = False


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Why a message can never be published: ``code`` is an error code of the server API
    (``bad_request``, ``too_large``, ``forbidden``, …), ``message`` says what is wrong."""

    code: str
    message: str


def parse_message(
    body: bytes | str,
    *,
    default_key: str,
    allow: Sequence[str] = ("*",),
    max_bytes: int | None = None,
) -> PublishRequest | DeadLetter:
    """``body`` (one message's bytes, a JSON object) as a publish, or why it cannot be one.

    ``allow`` lists the channel patterns (``*`` = any run of characters) this consumer may
    publish to; ``max_bytes`` bounds the whole body (None: no bound here; the node still checks
    ``data`` against the namespace's ``max_message_bytes``).
    """
    if max_bytes is not None and len(body) > max_bytes:
        return DeadLetter("too_large", f"message of {len(body)} bytes is over {max_bytes}")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return DeadLetter("bad_request", f"not JSON: {exc}")
    return check_message(value, default_key=default_key, allow=allow)


def check_message(
    value: object, *, default_key: str, allow: Sequence[str] = ("*",)
) -> PublishRequest | DeadLetter:
    """A decoded message as a publish, or why it cannot be one (see :func:`parse_message`)."""
    if not isinstance(value, dict):
        return DeadLetter("bad_request", "a message must be a JSON object with channel and data")
    if not _FIELDS.issuperset(value):
        unknown = sorted(set(value) - _FIELDS)
        return DeadLetter("bad_request", f"unknown field(s): {', '.join(unknown)}")
    if "data" not in value:
        return DeadLetter("bad_request", "data is missing")
    channel, channels = value.get("channel"), value.get("channels")
    if (channel is None) == (channels is None):
        return DeadLetter("bad_request", "give either channel or channels")
    broadcast = channels is not None
    if broadcast:
        if not isinstance(channels, list) or not channels or len(channels) > _MAX_CHANNELS:
            return DeadLetter("bad_request", f"channels must be a list of 1-{_MAX_CHANNELS} names")
        names = tuple(channels)
    else:
        names = (channel,)
    event = value.get("event", "message")
    key = value.get("idempotency_key")
    try:
        for name in names:
            validate_channel(name)
        validate_event_name(event)
    except TidingsError as exc:
        return DeadLetter(exc.code, exc.message)
    if key is None:
        key = default_key
    elif not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH:
        return DeadLetter("bad_request", f"idempotency_key must be a string of 1-{MAX_KEY_LENGTH} characters")
    # "*" allows every valid name (they were checked above): no pattern to match, per message
    for name in () if "*" in allow else names:
        if not any(pattern_matches(pattern, name) for pattern in allow):
            return DeadLetter("forbidden", f"this consumer may not publish to {name!r}")
    return PublishRequest(tuple(dict.fromkeys(names)), value["data"], event, key, broadcast)


def dead_letter_for(error: BaseException) -> DeadLetter | None:
    """The dead letter for a publish that raised ``error``, or None when a retry may succeed
    (the broker was unavailable, a limit was hit: keep the message, try again later)."""
    if isinstance(error, TidingsError) and not error.temporary and error.code != "internal":
        return DeadLetter(error.code, error.message)
    return None


def by_partition(messages: Iterable[M], key: Callable[[M], Hashable]) -> dict[Hashable, list[M]]:
    """``messages`` grouped by ``key(message)``, each group in the order given (first seen first).

    The runner publishes the groups concurrently and each group in order: order is kept within a
    partition (a PostgreSQL partition key, a stream, a subject), not across them.
    """
    groups: dict[Hashable, list[M]] = {}
    for message in messages:
        groups.setdefault(key(message), []).append(message)
    return groups


def backoff_delay(attempt: int, *, base: float, cap: float, jitter: float) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, …): ``base`` doubled each time, at most
    ``cap``, times ``1 + jitter``; the caller draws ``jitter`` (e.g. uniform in ±0.1), so this
    stays without a random source."""
    delay = min(cap, base * 2 ** max(0, attempt - 1))
    return max(0.0, float(delay) * (1.0 + jitter))
