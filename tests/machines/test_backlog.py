"""The slow-consumer rule and the close-handshake timeout every engine shares
(tidings.machines.backlog)."""

from __future__ import annotations

import pytest

from tidings.machines.backlog import Backlog, close_timeout


def test_within_the_limit_a_backlog_is_not_slow():
    rule = Backlog(100)
    assert not rule.overflows(0)
    assert not rule.overflows(100)
    assert rule.overflows(101)


def test_an_allowance_holds_until_the_backlog_is_back_within_the_limit():
    rule = Backlog(100)
    rule.allow(300)
    rule.allow(200)  # allowances add up
    assert not rule.overflows(600)
    assert rule.overflows(601)
    assert not rule.overflows(100)  # the replay has been read: the allowance is spent
    assert rule.allowance == 0
    assert rule.overflows(101)


@pytest.mark.parametrize(("idle", "expected"), [(0.5, 0.5), (10.0, 10.0), (300.0, 10.0)])
def test_the_close_timeout_is_the_idle_timeout_at_most_10_seconds(idle: float, expected: float):
    assert close_timeout(idle) == expected
