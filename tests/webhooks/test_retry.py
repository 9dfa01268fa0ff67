"""The retry policy, as pure code."""

from __future__ import annotations

import bisect
import email.utils

import pytest

from tidings.webhooks.retry import (
    AttemptResult,
    Outcome,
    RateWindow,
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


def run_window(window: RateWindow, now: float) -> bool:
    """Start an attempt at ``now`` if the window lets it; it ends at once."""
    if window.delay(now) == 0:
        window.start()
        window.end(now)
        return True
    return False


def test_a_rate_window_lets_rate_attempts_start_at_once_then_one_a_window_after_each_end() -> None:
    window = RateWindow(10)
    for n in range(10):
        assert run_window(window, 100.0 + n * 0.01)
    assert window.delay(100.5) == pytest.approx(0.5)  # the 11th: a second after the first
    assert window.delay(101.0) == 0.0
    assert run_window(window, 101.0)
    assert window.delay(101.0) == pytest.approx(0.01)  # the second one leaves at 101.01


def test_running_attempts_hold_their_places_until_they_end() -> None:
    window = RateWindow(2)
    window.start()
    window.start()
    assert window.delay(0.0) is None  # both places held, no end to count from
    window.end(5.0)
    assert window.delay(5.5) == pytest.approx(0.5)  # a second after that one's end
    assert window.delay(6.0) == 0.0
    window.end(6.0)
    window.end(6.0)  # an end never counted as a start leaves running at 0
    assert window.running == 0


def test_a_fractional_or_slow_rate_spaces_whole_attempts() -> None:
    slow = RateWindow(0.5)
    assert (slow.count, slow.window) == (1, 2.0)
    assert run_window(slow, 0.0)
    assert slow.delay(1.0) == pytest.approx(1.0)
    assert slow.delay(2.0) == 0.0
    assert (RateWindow(2.5).count, RateWindow(2.5).window) == (2, 0.8)


def test_a_fast_rate_keeps_a_bounded_log() -> None:
    fast = RateWindow(5000)
    assert (fast.count, fast.window) == (RateWindow.MAX_LOG, 0.2)
    assert (RateWindow(1500).count, RateWindow(1500).window) == (750, 0.5)
    for n in range(RateWindow.MAX_LOG):
        assert run_window(fast, n * 1e-5)
    assert (fast.delay(0.1) or 0) > 0
    assert len(fast.ends) == RateWindow.MAX_LOG


@pytest.mark.parametrize("rate", [1, 3, 10, 37.5, 1500])
def test_no_second_holds_more_starts_than_a_whole_rate(rate: float) -> None:
    window, now, starts = RateWindow(rate), 0.0, []
    while now < 5:
        delay = window.delay(now)
        assert delay is not None and delay >= 0
        if run_window(window, now):
            starts.append(now)
        now += max(delay, 1e-4)  # a caller sleeps at least a little
    assert len(starts) >= int(rate) * 4
    for i, start in enumerate(starts):
        in_a_second = bisect.bisect_left(starts, start + 1.0, lo=i) - i
        assert in_a_second <= (rate if rate == int(rate) else 2 * rate)


def test_a_retry_after_date_without_a_zone_is_ignored() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 -0000", 0.0) is None
