"""A destination's pause and rate-limit state, and the gate every request passes.

A 429 (or the API budget's hard share) pauses the whole destination; the token
bucket spaces its calls; above the budget's soft share it makes at most one call
per ``slow_interval``. No request leaves while the destination is paused: an
attempt that finds the pause, or too little of its deadline left, is deferred
(its lease goes back) rather than sleeping past its lease.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from bridge.destinations import Destination
from bridge.errors import RateLimited
from bridge.logs import event
from bridge.metrics import Metrics
from bridge.retry import Clock, Sleep, TokenBucket
from connectors.base import ApiUsage, Connector

log = logging.getLogger("lead_bridge.engine")


class Deferred(Exception):
    """The attempt sends nothing: its lease goes back, the delivery due at ``due``.

    Raised when the destination is paused or the attempt's deadline is too close
    to send; no attempt is recorded, because nothing was tried.
    """

    def __init__(self, due: float) -> None:
        super().__init__(due)
        self.due = due


class Throttle:
    def __init__(
        self,
        destination: Destination,
        metrics: Metrics,
        *,
        clock: Clock,
        monotonic: Clock,
        sleep: Sleep,
        on_pause: Callable[[], None],
    ) -> None:
        self.name = destination.name
        self.metrics = metrics
        self.clock = clock
        self.monotonic = monotonic
        self.sleep = sleep
        self.on_pause = on_pause  # the worker gives back what it claimed and not sent
        retry = destination.config.retry
        self.bucket = (
            TokenBucket(
                destination.rate_per_second, destination.burst, clock=monotonic, sleep=sleep
            )
            if destination.rate_per_second
            else None
        )
        self.paused_until = 0.0  # wall clock; set by a 429
        self.rate_limited_at: float | None = None  # wall clock of the last 429
        self.pause_reason: str | None = None
        # Waits imposed by the destination (Retry-After) end within this.
        self.max_pause = min(retry.max_retry_after, retry.max_age)
        # The API budget guard.
        self.api_budget = destination.config.flow.api_budget
        self.budget_state = "ok"  # ok | slow | paused
        self.budget_usage: ApiUsage | None = None
        self._next_call_at = 0.0  # monotonic: the earliest next call while slow
        metrics.paused(self.name, 0.0)

    def paused(self) -> bool:
        return self.paused_until > self.clock()

    def pause(self, now: float, seconds: float, reason: str = "rate_limited") -> None:
        """Slow the whole destination, not only one lead: nothing is sent until then."""
        if reason == "rate_limited":
            self.rate_limited_at = now
        if now + seconds > self.paused_until:
            self.pause_reason = reason
        self.paused_until = max(self.paused_until, now + seconds)
        self.metrics.paused(self.name, self.paused_until)
        self.on_pause()
        if self.bucket is not None:
            self.bucket.drain()

    def bounded(self, retry_after: float | None) -> float | None:
        """A wait the destination asked for, within retry.max_retry_after (and max_age)."""
        if retry_after is None:
            return None
        return min(max(retry_after, 0.0), self.max_pause)

    def gate(self, deadline: float, need: float) -> None:
        """May a request leave now? Not while paused, nor with less than ``need``
        seconds left of the attempt's deadline; else the attempt is deferred."""
        now = self.clock()
        if self.paused_until > now:
            raise Deferred(self.paused_until)
        if deadline - self.monotonic() < need:
            raise Deferred(now)

    async def admit(self, deadline: float, timeout: float) -> None:
        """Wait for a rate token and the budget's pace; a whole call of ``timeout``
        seconds must still fit before ``deadline`` when the request leaves."""
        if self.bucket is not None:
            if not await self.bucket.acquire(deadline - timeout):
                raise Deferred(self.clock() + self.bucket.ready_in())
            # A 429 may have paused the destination while this attempt waited.
            self.gate(deadline, need=timeout)
        await self._budget_pace(deadline, timeout)

    async def next_request(self) -> None:
        """A connector's second or later request within one call
        (:meth:`connectors.base.Connector.next_request`): a rate token each, and
        none while the destination is paused. The call's own timeout bounds the wait."""
        if self.bucket is not None and not self.paused():
            await self.bucket.acquire()
        if self.paused():
            raise RateLimited(
                "the destination is paused after a 429; this request waits",
                retry_after=self.paused_until - self.clock(),
            )

    async def _budget_pace(self, deadline: float, timeout: float) -> None:
        """Above the soft share of the API budget: one call per slow_interval."""
        if self.budget_state != "slow":
            return
        now = self.monotonic()
        at = max(now, self._next_call_at)
        if deadline - at < timeout:
            raise Deferred(self.clock() + (at - now))
        self._next_call_at = at + self.api_budget.slow_interval
        if at > now:
            await self.sleep(at - now)
            self.gate(deadline, need=timeout)

    def observe_budget(self, connector: Connector) -> None:
        """Compare the API usage the CRM reported with the budget; slow down or pause."""
        usage = connector.api_usage()
        if usage is None or usage.limit <= 0:
            return
        self.budget_usage = usage
        share = usage.share
        if share >= self.api_budget.hard_share:
            state = "paused"
        elif share >= self.api_budget.soft_share:
            state = "slow"
        else:
            state = "ok"
        self.metrics.api_budget(self.name, share, state)
        if state != self.budget_state:
            self.budget_state = state
            event(
                log,
                "api_budget",
                logging.INFO if state == "ok" else logging.WARNING,
                destination=self.name,
                state=state,
                used=usage.used,
                limit=usage.limit,
                window=usage.window,
                share=round(share, 4),
                soft_share=self.api_budget.soft_share,
                hard_share=self.api_budget.hard_share,
                recheck_in=self.api_budget.recheck if state == "paused" else None,
            )
        if state == "paused":
            self.pause(self.clock(), self.api_budget.recheck, reason="api_budget")
