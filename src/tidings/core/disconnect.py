"""Close codes and error codes: the one table of how tidings ends or refuses things.

WebSocket close codes 4000-4099 are tidings' own. Each entry says whether a client should
reconnect (and resume from its cursor). ``docs/reference/protocol.md`` mirrors this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

__all__ = ["CLOSE_REASONS", "CloseCode", "Disconnect", "disconnect"]


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    UNSUPPORTED_DATA = 1003
    INVALID_PAYLOAD = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    TOKEN_EXPIRED = 4001
    UNAUTHORIZED = 4003
    SLOW_CONSUMER = 4008
    RATE_LIMITED = 4029


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Why a connection is closed: the code, a reason for people, and whether to reconnect."""

    code: CloseCode
    reason: str
    reconnect: bool


CLOSE_REASONS: dict[CloseCode, Disconnect] = {
    d.code: d
    for d in (
        Disconnect(CloseCode.NORMAL, "normal closure", False),
        Disconnect(CloseCode.GOING_AWAY, "going away", True),
        Disconnect(CloseCode.UNSUPPORTED_DATA, "binary frames are not supported", False),
        Disconnect(CloseCode.INVALID_PAYLOAD, "invalid payload: frames must be UTF-8 JSON", False),
        Disconnect(CloseCode.POLICY_VIOLATION, "policy violation", False),
        Disconnect(CloseCode.MESSAGE_TOO_BIG, "message too big", False),
        Disconnect(CloseCode.INTERNAL_ERROR, "internal error", True),
        Disconnect(CloseCode.SERVICE_RESTART, "service restart: reconnect and resume", True),
        Disconnect(CloseCode.TRY_AGAIN_LATER, "try again later: a service is unavailable", True),
        Disconnect(CloseCode.TOKEN_EXPIRED, "token expired: reconnect with a new token", True),
        Disconnect(CloseCode.UNAUTHORIZED, "unauthorized", False),
        Disconnect(CloseCode.SLOW_CONSUMER, "slow consumer: reconnect and resume", True),
        Disconnect(CloseCode.RATE_LIMITED, "rate or connection limit: back off", True),
    )
}


def disconnect(code: CloseCode, reason: str | None = None) -> Disconnect:
    """The table's entry for ``code``, with ``reason`` in place of the default text if given."""
    entry = CLOSE_REASONS[code]
    return entry if reason is None else Disconnect(code, reason[:120], entry.reconnect)
