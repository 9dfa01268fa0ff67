"""The retry policy as pure code: what an attempt's result means and when to try again.

Nothing here waits, reads a clock or draws a random number; time and randomness are arguments.

::

    attempt result            outcome
    2xx                       succeeded
    410 Gone                  failed, endpoint disabled ("gone")
    other status, 3xx too     retry after schedule[n-1] ± jitter
    429                       … at least ``throttle_floor``, Retry-After honoured up to a cap
    503 with Retry-After      … Retry-After honoured up to a cap
    timeout                   … at least ``throttle_floor``
    connection error, SSRF    retry as a failure
    schedule exhausted        failed (replayable)
    failing ≥ disable_after   failed, endpoint disabled ("failing")

``attempts`` counts the attempts made so far, the one just finished included; the first attempt
is immediate, ``schedule[n - 1]`` is the delay before retry ``n``.
"""

from __future__ import annotations

import email.utils
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "AttemptResult",
    "Decision",
    "Outcome",
    "RateWindow",
    "RetryPolicy",
    "decide",
    "jittered",
    "parse_retry_after",
]


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one HTTP attempt produced; ``status`` is None when no response came."""

    status: int | None
    error: str | None = None
    timed_out: bool = False
    retry_after: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    schedule: Sequence[float]
    jitter: float = 0.2
    throttle_floor: float = 60.0
    retry_after_max: float = 3600.0
    disable_after: float = 5 * 86400.0


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    delay: float = 0.0
    disable_reason: str | None = None


def jittered(delay: float, jitter: float, rnd: float) -> float:
    """``delay`` scaled by a factor in ``[1 - jitter, 1 + jitter]``; ``rnd`` uniform in [0, 1]."""
    return max(0.0, delay * (1.0 + jitter * (2.0 * rnd - 1.0)))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def decide(
    policy: RetryPolicy,
    result: AttemptResult,
    attempts: int,
    now: float,
    failing_since: float | None,
    rnd: float,
) -> Decision:
    """What to do after attempt number ``attempts`` ended with ``result``.

    ``failing_since`` is when the endpoint's current run of failures began (None if this is its
    first failure); ``rnd`` is uniform in [0, 1] for the jitter.
    """
    if result.ok:
        return Decision(Outcome.SUCCEEDED)
    if result.status == 410:
        return Decision(Outcome.FAILED, disable_reason="gone: the endpoint answered 410")
    if failing_since is not None and now - failing_since >= policy.disable_after:
        return Decision(
            Outcome.FAILED, disable_reason=(f"failing: every attempt failed for {policy.disable_after:g} s")
        )
    if attempts - 1 >= len(policy.schedule):
        return Decision(Outcome.FAILED)
    delay = jittered(policy.schedule[attempts - 1], policy.jitter, rnd)
    if result.status == 429 or result.timed_out:
        delay = max(delay, policy.throttle_floor)
    if result.status in (429, 503):
        asked = parse_retry_after(result.retry_after, now)
        if asked is not None:
            delay = max(delay, min(asked, policy.retry_after_max))
    return Decision(Outcome.RETRY, delay=delay)


class RateWindow:
    """An endpoint's ``rate_limit``: when its next attempt may start (a sliding log).

    An attempt holds a place in the log from its start until ``window`` seconds after its end;
    at most ``count`` places are held. So the endpoint never has more than ``count`` requests
    arriving in any ``window`` seconds, whatever the network adds between our clock and its
    (request n + count starts a window after request n was answered, so after it arrived).
    Up to ``MAX_LOG`` per second the window is a second and ``count`` the rate, when the rate
    is whole: "at most ``rate`` in any second" (10/s: 10 at once, then the 11th a second after
    the first was answered), not a token bucket's "``rate`` per second plus a burst". A
    fractional rate keeps its average (2.5/s: 2 in any 0.8 s; 0.5/s: one in any 2 s). Above
    ``MAX_LOG`` (to bound the log) the second is cut in ``k`` windows of ``rate // k`` each:
    still at most ``rate`` in any second. Times are the caller's monotonic clock."""

    MAX_LOG = 1000

    def __init__(self, rate: float) -> None:
        self.rate = rate
        if rate > self.MAX_LOG:
            parts = math.ceil(rate / self.MAX_LOG)
            self.count, self.window = int(rate / parts), 1.0 / parts
        else:
            self.count = max(1, int(rate))
            self.window = self.count / rate
        self.running = 0
        self.ends: deque[float] = deque()

    def delay(self, now: float) -> float | None:
        """Seconds until an attempt may start: 0 if one may now, None if every place is held
        by an attempt still running (ask again when one ends)."""
        while self.ends and now - self.ends[0] >= self.window:
            self.ends.popleft()
        if self.running + len(self.ends) < self.count:
            return 0.0
        if not self.ends:
            return None
        # the same subtraction as the test above, so that a positive wait is never rounded away
        return self.window - (now - self.ends[0])

    def start(self) -> None:
        """An attempt starts (call when :meth:`delay` said 0)."""
        self.running += 1

    def end(self, now: float) -> None:
        """An attempt that :meth:`start` counted has ended (answered, failed or abandoned)."""
        self.running = max(0, self.running - 1)
        self.ends.append(now)
