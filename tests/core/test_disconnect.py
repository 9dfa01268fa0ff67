from __future__ import annotations

import pytest

from tidings.core.disconnect import CLOSE_REASONS, CloseCode, disconnect


def test_every_close_code_has_an_entry_in_the_table():
    assert set(CLOSE_REASONS) == set(CloseCode)
    for code, entry in CLOSE_REASONS.items():
        assert entry.code is code
        assert entry.reason


@pytest.mark.parametrize(
    ("code", "value", "reconnect"),
    [
        (CloseCode.UNSUPPORTED_DATA, 1003, False),
        (CloseCode.INVALID_PAYLOAD, 1007, False),
        (CloseCode.POLICY_VIOLATION, 1008, False),
        (CloseCode.MESSAGE_TOO_BIG, 1009, False),
        (CloseCode.INTERNAL_ERROR, 1011, True),
        (CloseCode.SERVICE_RESTART, 1012, True),
        (CloseCode.TRY_AGAIN_LATER, 1013, True),
        (CloseCode.UNAUTHORIZED, 4003, False),
        (CloseCode.TOKEN_EXPIRED, 4001, True),
        (CloseCode.SLOW_CONSUMER, 4008, True),
        (CloseCode.RATE_LIMITED, 4029, True),
    ],
)
def test_close_codes_match_the_documented_table(code: CloseCode, value: int, reconnect: bool):
    assert int(code) == value
    assert disconnect(code).reconnect is reconnect


def test_tidings_own_codes_are_in_the_4000_to_4099_range():
    for code in CloseCode:
        assert code < 4000 or 4000 <= code <= 4099


def test_disconnect_without_reason_returns_the_table_entry():
    assert disconnect(CloseCode.SLOW_CONSUMER) is CLOSE_REASONS[CloseCode.SLOW_CONSUMER]


def test_disconnect_with_reason_keeps_code_and_reconnect_and_truncates_the_reason():
    entry = disconnect(CloseCode.SERVICE_RESTART, "x" * 500)
    assert entry.code is CloseCode.SERVICE_RESTART
    assert entry.reconnect is True
    assert entry.reason == "x" * 120
