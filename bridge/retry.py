"""Backoff across attempts, Retry-After handling, and the token bucket.

Across attempts the schedule is stored in the database (``next_attempt_at``),
so it survives restarts. Inside one attempt, connection errors get a short
tenacity retry (see bridge/engine/attempt.py); nothing here sleeps for long.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


def backoff_delay(
    attempts_made: int,
    schedule: Sequence[float],
    jitter: float,
    rng: Callable[[], float] = random.random,
) -> float:
    """Delay before the next attempt after ``attempts_made`` failed attempts.

    The schedule's last entry repeats; jitter spreads retries by ±``jitter``
    so that a destination coming back is not hit by a thundering herd.
    """
    index = min(max(attempts_made, 1), len(schedule)) - 1
    base = schedule[index]
    return max(0.0, base * (1.0 + jitter * (2.0 * rng() - 1.0)))


@dataclass(frozen=True)
class RetryDecision:
    give_up: bool
    next_attempt_at: float | None
    reason: str | None = None


def plan_retry(
    *,
    attempts_made: int,
    created_at: float,
    now: float,
    schedule: Sequence[float],
    jitter: float,
    max_age: float,
    retry_after: float | None = None,
    rng: Callable[[], float] = random.random,
) -> RetryDecision:
    """When to try again, or give up because the next try would pass ``max_age``."""
    delay = backoff_delay(attempts_made, schedule, jitter, rng)
    if retry_after is not None:
        # The destination said when: not before that, and not much later either.
        delay = max(retry_after, 0.0)
    when = now + delay
    if when - created_at > max_age:
        return RetryDecision(
            True,
            None,
            f"gave up after {attempts_made} attempt(s) over {human_duration(now - created_at)} "
            f"(max_age {human_duration(max_age)})",
        )
    return RetryDecision(False, when)


def human_duration(seconds: float, *, spelled: bool = False) -> str:
    """``90s``, ``15m``, ``2.5h`` (errors, logs); ``spelled``: ``90 s``, ``15 min``,
    ``2.5 h`` (notices people read)."""
    s, m, h = (" s", " min", " h") if spelled else ("s", "m", "h")
    if seconds < 120:
        return f"{seconds:.0f}{s}"
    if seconds < 7200:
        return f"{seconds / 60:.0f}{m}"
    return f"{seconds / 3600:.1f}{h}"


class TokenBucket:
    """Rate limit shared by all deliveries of one destination."""

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.capacity = float(max(1, burst))
        self.tokens = self.capacity
        self.clock = clock
        self.sleep = sleep
        self.updated = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    async def acquire(self, deadline: float | None = None) -> bool:
        """Take a token, waiting for it; False (nothing taken, no wait) when it
        would come after ``deadline`` (on this bucket's clock)."""
        async with self._lock:  # FIFO: waiters are served in order
            while True:
                self._refill()
                # A hair under 1 counts as 1: float rounding must not make a waiter
                # sleep for ever-smaller slivers of time.
                if self.tokens >= 1.0 - 1e-9:
                    self.tokens = max(0.0, self.tokens - 1.0)
                    return True
                wait = (1.0 - self.tokens) / self.rate
                if deadline is not None and self.clock() + wait > deadline:
                    return False
                await self.sleep(wait)

    def ready_in(self) -> float:
        """Seconds until a token is there (ignoring waiters)."""
        self._refill()
        return max(0.0, (1.0 - self.tokens) / self.rate)

    def drain(self) -> None:
        """A 429 says we were too fast: start over from an empty bucket."""
        self._refill()
        self.tokens = 0.0
