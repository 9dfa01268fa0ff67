"""The retry policy, as pure code."""

from __future__ import annotations

import email.utils

import pytest

from tidings.webhooks.retry import (
    AttemptResult,
    Outcome,
    RetryPolicy,
    decide,
    jittered,
    parse_retry_after,
)

DEFAULT = RetryPolicy(
    schedule=(5, 300, 1800, 7200, 18000, 36000, 36000),
    jitter=0.2,
    throttle_floor=60,
    retry_after_max=3600,
    disable_after=5 * 86400,
)
FAIL = AttemptResult(500, error="HTTP 500")


def test_a_2xx_succeeds() -> None:
    assert decide(DEFAULT, AttemptResult(204), 1, 0, None, 0.5).outcome is Outcome.SUCCEEDED


@pytest.mark.parametrize("status", [301, 302, 307, 400, 404, 500, 503])
def test_anything_else_is_retried_on_the_schedule(status: int) -> None:
    decision = decide(DEFAULT, AttemptResult(status), 1, 0, None, 0.5)
    assert decision.outcome is Outcome.RETRY
    assert decision.delay == 5


def test_the_default_schedule_makes_eight_attempts_then_fails() -> None:
    delays = [decide(DEFAULT, FAIL, n, 0, None, 0.5).delay for n in range(1, 8)]
    assert delays == [5, 300, 1800, 7200, 18000, 36000, 36000]
    assert decide(DEFAULT, FAIL, 8, 0, None, 0.5).outcome is Outcome.FAILED


def test_jitter_stays_within_twenty_percent() -> None:
    assert jittered(100, 0.2, 0.0) == pytest.approx(80)
    assert jittered(100, 0.2, 1.0) == pytest.approx(120)
    assert jittered(100, 0.2, 0.5) == pytest.approx(100)


def test_a_timeout_or_a_429_waits_at_least_the_floor() -> None:
    timeout = AttemptResult(None, error="timeout", timed_out=True)
    assert decide(DEFAULT, timeout, 1, 0, None, 0.5).delay == 60
    assert decide(DEFAULT, AttemptResult(429), 1, 0, None, 0.5).delay == 60


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    asked = AttemptResult(429, retry_after="120")
    assert decide(DEFAULT, asked, 1, 0, None, 0.5).delay == 120
    huge = AttemptResult(503, retry_after="999999")
    assert decide(DEFAULT, huge, 1, 0, None, 0.5).delay == 3600


def test_retry_after_parses_seconds_and_http_dates() -> None:
    assert parse_retry_after("30", 0) == 30
    date = email.utils.formatdate(1000.0 + 90, usegmt=True)
    assert parse_retry_after(date, 1000.0) == pytest.approx(90)
    assert parse_retry_after("soon", 0) is None
    assert parse_retry_after(None, 0) is None


def test_410_fails_and_disables() -> None:
    decision = decide(DEFAULT, AttemptResult(410), 1, 0, None, 0.5)
    assert decision.outcome is Outcome.FAILED
    assert decision.disable_reason is not None


def test_an_endpoint_failing_for_the_whole_window_is_disabled() -> None:
    decision = decide(DEFAULT, FAIL, 3, 5 * 86400 + 1, 0.0, 0.5)
    assert decision.outcome is Outcome.FAILED
    assert decision.disable_reason is not None
    assert "failing" in decision.disable_reason
    assert decide(DEFAULT, FAIL, 3, 86400, 0.0, 0.5).outcome is Outcome.RETRY
