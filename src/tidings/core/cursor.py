"""Cursors: the opaque, URL-safe text form of a set of ``(channel, epoch, offset)`` positions.

Encoding (documented in docs/reference/protocol.md): a cursor is one or more *tokens* joined by
``.``; a token is the unpadded base64url encoding of the UTF-8 text ``{offset}:{epoch}:{channel}``.
A token depends only on one channel's position, so it is computed once per publication and shared
by every subscriber; a multi-channel stream's cursor is the join of its channels' tokens. Decoding
merges repeated channels by keeping the later position in the same epoch (and the last one given
when epochs differ), so cursors from several transports can be passed together.

A cursor given to resume a subscription must name only channels the subscription has
(:func:`positions_for`, the one validation every transport calls): a cut or garbled token can
still decode, to another channel, and ignoring it would silently start from the present.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection, Iterable, Mapping

from tidings.core.channels import validate_channel
from tidings.core.position import EPOCH_ALPHABET, Position
from tidings.exceptions import BadRequest, InvalidCursor

__all__ = [
    "MAX_CURSOR_LENGTH",
    "cursor_position",
    "decode_cursor",
    "decode_cursors",
    "encode_cursor",
    "encode_token",
    "positions_for",
]

MAX_CURSOR_LENGTH = 64 * 1024


def encode_token(channel: str, position: Position) -> str:
    """The cursor token of one channel at ``position``."""
    raw = f"{position.offset}:{position.epoch}:{channel}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def encode_cursor(positions: Mapping[str, Position]) -> str:
    """The cursor of several channels' positions (channels in sorted order, for stable ETags)."""
    return ".".join(encode_token(ch, positions[ch]) for ch in sorted(positions))


def _decode_token(token: str) -> tuple[str, Position]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        offset_text, epoch, channel = raw.decode("utf-8").split(":", 2)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursor("invalid cursor: not a tidings cursor") from None
    # isascii(): str.isdigit() also accepts digits such as "²" (int() refuses) and "١".
    if not (offset_text.isascii() and offset_text.isdigit()) or len(offset_text) > 18:
        raise InvalidCursor("invalid cursor: bad offset")
    if not epoch or len(epoch) > 64 or not set(epoch) <= EPOCH_ALPHABET:
        raise InvalidCursor("invalid cursor: bad epoch")
    try:
        validate_channel(channel)
    except BadRequest:
        raise InvalidCursor("invalid cursor: bad channel") from None
    return channel, Position(epoch, int(offset_text))


def decode_cursor(cursor: str) -> dict[str, Position]:
    """Positions by channel from one cursor; raises :class:`InvalidCursor` if it is malformed."""
    return decode_cursors([cursor])


def decode_cursors(cursors: Iterable[str]) -> dict[str, Position]:
    """Merge several cursors into positions by channel (see the module docstring for the rule)."""
    merged: dict[str, Position] = {}
    for cursor in cursors:
        if not cursor or len(cursor) > MAX_CURSOR_LENGTH:
            raise InvalidCursor("invalid cursor: empty or too long")
        for token in cursor.split("."):
            channel, position = _decode_token(token)
            known = merged.get(channel)
            if known is None or known.epoch != position.epoch or position.offset > known.offset:
                merged[channel] = position
    return merged


def cursor_position(cursor: str, channel: str) -> Position:
    """The position ``cursor`` holds for ``channel`` (a WebSocket ``subscribe`` from a cursor).

    Positions of other channels are ignored, as on the HTTP transports, so one cursor of a
    multi-channel stream resumes each of its channels. Raises :class:`InvalidCursor` when the
    cursor is malformed or holds no position for ``channel``: resuming from the present instead
    would lose what the client asked for without telling it.
    """
    position = decode_cursor(cursor).get(channel)
    if position is None:
        raise InvalidCursor(f"invalid cursor: it holds no position for {channel[:200]}")
    return position


def positions_for(cursors: str | Iterable[str], channels: Collection[str]) -> dict[str, Position]:
    """The resume positions that ``cursors`` (one cursor, or several to merge) give ``channels``.

    Raises :class:`InvalidCursor` (a ``bad_request``) if a cursor is malformed or names a channel
    not in ``channels``, naming that channel. A channel the cursors do not name is absent from
    the answer (it starts from the present).
    """
    positions = decode_cursors([cursors] if isinstance(cursors, str) else cursors)
    for channel in positions:
        if channel not in channels:
            raise InvalidCursor(
                f"invalid cursor: it names channel {channel!r}, which this "
                "subscription does not include (a cut or mixed-up cursor?)"
            )
    return positions
