"""The WebSocket wire schema: client commands parsed from JSON text frames.

Every command is a JSON object with ``op`` and an optional integer ``ref`` that the reply echoes.
:func:`parse_command` returns a command value or raises :class:`CommandError`, which carries the
``ref`` (when one could be read) so the error reply can name the command it answers.

The rule of every transport (docs/reference/protocol.md, "Unknown fields and parameters"): fields
a command does not know are ignored, so a newer client can talk to an older server; the fields
it knows are checked strictly, and a bad one is refused (``bad_request``), never dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from tidings.core.channels import validate_channel
from tidings.core.cursor import cursor_position
from tidings.core.delta import parse_delta
from tidings.core.position import EPOCH_ALPHABET, Position
from tidings.exceptions import BadRequest, TidingsError

__all__ = [
    "Command",
    "CommandError",
    "Connect",
    "HistoryCmd",
    "Ping",
    "PresenceCmd",
    "PublishCmd",
    "Rpc",
    "Subscribe",
    "Unsubscribe",
    "WireStats",
    "parse_command",
    "parse_position",
]

MAX_REF = 2**53


@dataclass(frozen=True, slots=True)
class Connect:
    ref: int | None
    token: str | None
    #: Passed to the connect proxy, if one is configured (else ignored).
    data: Any = None


@dataclass(frozen=True, slots=True)
class Subscribe:
    ref: int | None
    channel: str
    since: Position | None
    token: str | None = None
    delta: str | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    ref: int | None
    channel: str


@dataclass(frozen=True, slots=True)
class PublishCmd:
    ref: int | None
    channel: str
    data: Any
    event: str
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class PresenceCmd:
    ref: int | None
    channel: str


@dataclass(frozen=True, slots=True)
class HistoryCmd:
    ref: int | None
    channel: str
    since: Position | None
    limit: int


@dataclass(frozen=True, slots=True)
class Ping:
    ref: int | None


@dataclass(frozen=True, slots=True)
class WireStats:
    """What the server wrote for each publication sent on this connection since the last
    ``wire_stats`` (the first one starts counting): bytes on the wire against uncompressed."""

    ref: int | None


@dataclass(frozen=True, slots=True)
class Rpc:
    """A call of the application's backend through the rpc proxy (``[proxy.rpc]``)."""

    ref: int | None
    method: str
    data: Any


Command = Connect | Subscribe | Unsubscribe | PublishCmd | PresenceCmd | HistoryCmd | Ping | Rpc | WireStats


class CommandError(Exception):
    """A command that cannot be carried out; ``error`` says why, ``ref`` which command it was."""

    def __init__(self, error: TidingsError, ref: int | None, *, invalid_json: bool = False) -> None:
        super().__init__(error.message)
        self.error = error
        self.ref = ref
        self.invalid_json = invalid_json


def _ref(obj: dict[str, Any]) -> int | None:
    ref = obj.get("ref")
    if ref is None:
        return None
    if isinstance(ref, bool) or not isinstance(ref, int) or not 0 <= ref < MAX_REF:
        raise BadRequest("ref must be a non-negative integer")
    return ref


def _str(obj: dict[str, Any], key: str, *, required: bool = False, max_len: int = 200) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise BadRequest(f"missing field {key!r}")
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise BadRequest(f"field {key!r} must be a string of at most {max_len} characters")
    return value


# ASCII 33-126 but ':' (58); a regex, as every publish checks its event name.
_EVENT_NAME = re.compile(r"[!-9;-~]{1,64}")


def validate_event_name(event: object) -> str:
    """Event names are 1-64 printable ASCII characters without whitespace or ``:`` (SSE-safe)."""
    if not isinstance(event, str) or _EVENT_NAME.fullmatch(event) is None:
        raise BadRequest("event must be 1-64 printable ASCII characters without spaces or ':'")
    return event


def parse_position(value: object) -> Position | None:
    """A ``since`` object ``{"epoch": str, "offset": int}``; None passes through."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadRequest("since must be an object with epoch and offset")
    epoch, offset = value.get("epoch"), value.get("offset")
    if not isinstance(epoch, str) or not epoch or len(epoch) > 64 or not set(epoch) <= EPOCH_ALPHABET:
        raise BadRequest("since.epoch must be an epoch string")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset < MAX_REF:
        raise BadRequest("since.offset must be a non-negative integer")
    return Position(epoch, offset)


def _resume(obj: dict[str, Any], channel: str) -> Position | None:
    """Where a subscription resumes: ``since`` or the channel's position in ``cursor``."""
    since = parse_position(obj.get("since"))
    cursor = obj.get("cursor")
    if cursor is None:
        return since
    if since is not None:
        raise BadRequest("give since or cursor, not both")
    if not isinstance(cursor, str):
        raise BadRequest("field 'cursor' must be a string")
    return cursor_position(cursor, channel)


def _limit(obj: dict[str, Any], default: int, maximum: int) -> int:
    # A history_limit below the default must not refuse a command that gives no limit.
    limit = obj.get("limit", min(default, maximum))
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= maximum:
        raise BadRequest(f"limit must be an integer from 1 to {maximum}")
    return limit


def _channel(obj: dict[str, Any]) -> str:
    if "channel" not in obj:
        raise BadRequest("missing field 'channel'")
    return validate_channel(obj["channel"])


def parse_command(text: str | bytes, history_limit: int = 1000) -> Command:
    """Parse one client frame; raise :class:`CommandError` (with the ref, if any) when invalid.

    The caller has already checked the frame's size and that it is text.
    """
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):  # valid JSON, only too deep to parse: refuse, stay open
            raise CommandError(BadRequest("frame nests too deep (limits.max_json_depth)"), None) from None
        raise CommandError(BadRequest("frame is not valid JSON"), None, invalid_json=True) from None
    if not isinstance(obj, dict):
        raise CommandError(BadRequest("a command must be a JSON object"), None)
    ref: int | None = None
    try:
        ref = _ref(obj)
        op = obj.get("op")
        if op == "subscribe":
            channel = _channel(obj)
            return Subscribe(
                ref,
                channel,
                _resume(obj, channel),
                _str(obj, "token", max_len=8192),
                parse_delta(obj.get("delta")),
            )
        if op == "publish":
            if "data" not in obj:
                raise BadRequest("missing field 'data'")
            event = validate_event_name(obj.get("event", "message"))
            return PublishCmd(
                ref, _channel(obj), obj["data"], event, _str(obj, "idempotency_key", max_len=200)
            )
        if op == "unsubscribe":
            return Unsubscribe(ref, _channel(obj))
        if op == "ping":
            return Ping(ref)
        if op == "wire_stats":
            return WireStats(ref)
        if op == "presence":
            return PresenceCmd(ref, _channel(obj))
        if op == "history":
            return HistoryCmd(
                ref, _channel(obj), parse_position(obj.get("since")), _limit(obj, 100, history_limit)
            )
        if op == "connect":
            return Connect(ref, _str(obj, "token", max_len=8192), obj.get("data"))
        if op == "rpc":
            method = _str(obj, "method", required=True)
            assert method is not None
            if not method:
                raise BadRequest("field 'method' must not be empty")
            return Rpc(ref, method, obj.get("data"))
        if op is None:
            raise BadRequest("missing field 'op'")
        raise BadRequest(f"unknown op {str(op)[:40]!r}")
    except TidingsError as exc:
        raise CommandError(exc, ref) from None
