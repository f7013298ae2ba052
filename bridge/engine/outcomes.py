"""What an attempt means for its lead: the record it becomes (payload, ``when:``,
mapping), and its outcome — delivered, pending (backoff or a 429's pause), dead
with a reason, or skipped. The one place that classifies an attempt's error."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from bridge.destinations import Destination
from bridge.engine.throttle import Throttle
from bridge.errors import (
    AuthError,
    DeliveryError,
    MappingError,
    PermanentError,
    RateLimited,
    RetryableError,
    classify_unexpected,
)
from bridge.metrics import Metrics
from bridge.retry import Clock, human_duration, plan_retry
from bridge.store.base import Claim, Outcome
from connectors.base import DeliveryContext, DeliveryResult

log = logging.getLogger("lead_bridge.engine")


def idempotency_key(lead_id: str, destination: str) -> str:
    """Stable per lead and destination: the receiver's deduplication key."""
    digest = hashlib.sha256(f"{destination}\0{lead_id}".encode()).hexdigest()[:32]
    return f"msg_{digest}"


def safe_error(exc: BaseException) -> str:
    # Unclassified exception messages can quote payloads; the log filter masks
    # emails and phones, and we keep it short.
    text = f"{type(exc).__name__}: {exc}"
    return text[:300]


class Outcomes:
    """Builds one destination's outcomes. ``started`` is the attempt's wall-clock
    start, ``t0`` its perf_counter start (for the duration)."""

    def __init__(
        self,
        destination: Destination,
        throttle: Throttle,
        metrics: Metrics,
        *,
        clock: Clock,
        rng: Callable[[], float],
    ) -> None:
        self.dest = destination
        self.name = destination.name
        self.retry = destination.config.retry
        self.throttle = throttle
        self.metrics = metrics
        self.clock = clock
        self.rng = rng

    def make(self, claim: Claim, started: float, t0: float, **kw: Any) -> Outcome:
        return Outcome(
            delivery_id=claim.delivery_id,
            lease_token=claim.lease_token,
            started_at=started,
            duration=time.perf_counter() - t0,
            **kw,
        )

    def prepare(
        self, claim: Claim, started: float, t0: float
    ) -> Outcome | tuple[dict[str, Any], DeliveryContext]:
        """Payload, ``when:`` and mapping: the record to send, or the lead's outcome."""
        if claim.payload is None:
            return self.dead(
                claim, started, t0, "the lead's payload is no longer stored (purged or erased)"
            )
        try:
            lead = json.loads(claim.payload)
        except ValueError:
            return self.dead(claim, started, t0, "stored payload is not valid JSON")
        if self.dest.when is not None and not self.dest.when.matches(lead):
            return self.make(
                claim,
                started,
                t0,
                status="skipped",
                attempt_outcome="skipped",
                error="the destination's `when:` filter did not match",
                count_attempt=False,
            )
        try:
            mapped = self.dest.mapping.apply(lead)
        except MappingError as exc:
            return self.dead(claim, started, t0, f"mapping error: {exc}")
        if mapped.unmapped_keys:
            self.metrics.unmapped(self.name, mapped.unmapped_keys)
        context = DeliveryContext(
            lead_id=claim.lead_id,
            destination=self.name,
            attempt=claim.attempts + 1,
            idempotency_key=idempotency_key(claim.lead_id, self.name),
            lead=lead,
            received_at=claim.received_at,
        )
        return mapped.record, context

    def delivered(self, claim: Claim, started: float, t0: float, result: DeliveryResult) -> Outcome:
        return self.make(
            claim,
            started,
            t0,
            status="delivered",
            attempt_outcome="delivered",
            remote_id=result.remote_id,
            status_code=result.status_code,
        )

    def failed(self, claim: Claim, started: float, t0: float, exc: BaseException) -> Outcome:
        """The outcome of a lead whose send raised ``exc`` (or whose batch entry is it)."""
        if isinstance(exc, AuthError):
            return self.dead(
                claim,
                started,
                t0,
                f"check the credentials of destination {self.name}: {exc.message}",
                exc,
            )
        if isinstance(exc, PermanentError):
            return self.dead(claim, started, t0, exc.message, exc)
        if isinstance(exc, RetryableError):
            return self.later(claim, started, t0, exc.message, exc)
        if isinstance(exc, TimeoutError):
            return self.later(
                claim,
                started,
                t0,
                f"the attempt timed out after {time.perf_counter() - t0:.1f}s "
                f"(retry.timeout {self.retry.timeout:g}s per call)",
            )
        if isinstance(exc, DeliveryError):  # a subclass we do not know: treat as permanent
            return self.dead(claim, started, t0, exc.message, exc)
        permanent = classify_unexpected(exc)
        if permanent is not None:
            return self.dead(claim, started, t0, permanent.message, permanent)
        # Nothing classified this: retry, and keep the traceback for the operator.
        log.error(
            "event=unclassified_error lead_id=%s destination=%s error=%s",
            claim.lead_id,
            self.name,
            type(exc).__name__,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        return self.later(claim, started, t0, f"unexpected error: {safe_error(exc)}")

    def dead(
        self,
        claim: Claim,
        started: float,
        t0: float,
        message: str,
        exc: DeliveryError | None = None,
    ) -> Outcome:
        return self.make(
            claim,
            started,
            t0,
            status="dead",
            attempt_outcome="dead",
            error=message,
            status_code=exc.status_code if exc else None,
        )

    def later(
        self,
        claim: Claim,
        started: float,
        t0: float,
        message: str,
        exc: RetryableError | None = None,
    ) -> Outcome:
        """Pending again: after the next backoff step, or dead when the plan gives up."""
        now = self.clock()
        status_code = exc.status_code if exc else None
        retry_after = self.throttle.bounded(exc.retry_after if exc else None)
        if isinstance(exc, RateLimited):
            return self.throttled(claim, started, t0, message, exc, now, retry_after)
        decision = plan_retry(
            attempts_made=claim.attempts + 1,
            created_at=claim.created_at,
            now=now,
            schedule=self.retry.schedule,
            jitter=self.retry.jitter,
            max_age=self.retry.max_age,
            retry_after=retry_after,
            rng=self.rng,
        )
        if decision.give_up:
            return self.dead(claim, started, t0, f"{decision.reason}; last error: {message}", exc)
        return self.make(
            claim,
            started,
            t0,
            status="pending",
            attempt_outcome="retry",
            next_attempt_at=decision.next_attempt_at,
            error=message,
            status_code=status_code,
        )

    def throttled(
        self,
        claim: Claim,
        started: float,
        t0: float,
        message: str,
        exc: RateLimited,
        now: float,
        retry_after: float | None,
    ) -> Outcome:
        """A 429: the whole destination pauses; the lead is due again when it ends.

        Being throttled is not the lead's failure: the attempt is recorded, but it
        counts neither as an attempt nor as a backoff step. Only max_age still applies.
        """
        throttle = self.throttle
        pause = (
            retry_after
            if retry_after is not None
            else min(self.retry.schedule[0], throttle.max_pause)
        )
        throttle.pause(now, pause)
        if throttle.paused_until - claim.created_at > self.retry.max_age:
            reason = (
                f"gave up: rate limited after {human_duration(now - claim.created_at)}, "
                f"the pause would pass max_age {human_duration(self.retry.max_age)}"
            )
            return self.dead(claim, started, t0, f"{reason}; last error: {message}", exc)
        return self.make(
            claim,
            started,
            t0,
            status="pending",
            attempt_outcome="rate_limited",
            next_attempt_at=throttle.paused_until,
            error=message,
            status_code=exc.status_code,
            count_attempt=False,
        )
