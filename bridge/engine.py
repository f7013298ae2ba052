"""The delivery engine: claim due deliveries, map, call the connector, record the outcome.

One ``DestinationWorker`` per destination, each with its own claim loop,
concurrency limit, token bucket and pause (after a 429), so a slow or stuck
destination never holds up another one, nor intake.

Per attempt::

    claim (lease) -> when: filter -> mapping -> rate limit -> connector.send
        (tenacity: short retry of connection errors, bounded by retry.timeout)
    -> delivered | pending (backoff / Retry-After) | dead | skipped   (finish, fenced)

One deadline covers an attempt from its claim to its outcome (startup, the wait
for a rate-limit token, send, re-authentication, second send); the lease is the
deadline plus LEASE_MARGIN, so no other worker takes a delivery over while its
attempt can still send. No request leaves while its destination is paused (a
429): an attempt that finds the pause, or too little of its time left, gives its
lease back without sending. Being rate limited is not the lead's failure: such an
attempt is recorded (``rate_limited``) but uses neither a backoff step nor the
attempt count. Each worker's loop is supervised: a crash is logged, counted and
the loop restarted with backoff (``lead_bridge_worker_up`` shows it meanwhile).

Batches: a connector with ``send_batch`` (HubSpot, Salesforce) gets up to its
batch size of claimed deliveries per API call. A call starts as soon as a slot is
free (a lone lead is not delayed; ``flow.batch_wait`` may hold it to fill up), so
batches grow only while a backlog waits for slots or rate tokens. A batch is a
transport detail: each lead is mapped, filtered and finished on its own, with its
own attempt row, backoff and dead letter; a failure of the whole call counts for
each lead as if its own send had failed. One rate token per API call.

API budget guard: after each call the connector may report the CRM's API usage
(``Connector.api_usage``); above ``flow.api_budget.soft_share`` the destination
makes at most one call per ``slow_interval``, above ``hard_share`` it pauses for
``recheck`` (then one call sees whether the window freed).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from bridge.config import WorkerConfig
from bridge.destinations import Destination
from bridge.errors import (
    AuthError,
    ConfigError,
    DeliveryError,
    MappingError,
    PermanentError,
    RateLimited,
    RetryableError,
    StoreError,
    classify_unexpected,
)
from bridge.logs import event
from bridge.metrics import Metrics
from bridge.retry import Clock, IntakeFirst, Sleep, TokenBucket, human_duration, plan_retry
from bridge.store.base import Claim, Outcome, Store
from connectors.base import ApiUsage, Connector, DeliveryContext, DeliveryResult

T = TypeVar("T")

log = logging.getLogger("lead_bridge.engine")

# How long a destination's connector startup failure waits before trying again.
STARTUP_RETRY = 30.0
# How much longer a lease lasts than the attempt's deadline: room for the outcome's commit.
LEASE_MARGIN = 10.0
# Backoff between restarts of a crashed worker loop: doubling from the engine's
# restart_backoff up to this.
MAX_RESTART_BACKOFF = 60.0


class _Deferred(Exception):
    """The attempt sends nothing: its lease goes back, the delivery due at ``due``.

    Raised when the destination is paused or the attempt's deadline is too close
    to send; no attempt is recorded, because nothing was tried.
    """

    def __init__(self, due: float) -> None:
        super().__init__(due)
        self.due = due


def idempotency_key(lead_id: str, destination: str) -> str:
    """Stable per lead and destination: the receiver's deduplication key."""
    digest = hashlib.sha256(f"{destination}\0{lead_id}".encode()).hexdigest()[:32]
    return f"msg_{digest}"


def _is_connection_error(exc: BaseException) -> bool:
    # A retryable error without an HTTP status or a Retry-After never reached the
    # remote application: worth a quick second try inside the same attempt.
    return (
        isinstance(exc, RetryableError)
        and not isinstance(exc, RateLimited)
        and exc.status_code is None
        and exc.retry_after is None
    )


class DestinationWorker:
    def __init__(
        self,
        engine: Engine,
        destination: Destination,
    ) -> None:
        self.engine = engine
        self.dest = destination
        self.name = destination.name
        self.retry = destination.config.retry
        self.connector: Connector | None = None
        self.started = False
        # Claimed and not yet finished (committed); ``sending`` is the subset whose
        # attempt is still running, i.e. holds one of the destination's slots.
        self.inflight: dict[int, tuple[Claim, asyncio.Task[None]]] = {}
        self.sending: set[int] = set()
        # Running API calls (one slot each), by key (the first delivery id) -> their ids.
        self.calls: dict[int, list[int]] = {}
        # Leads per API call; known once the connector is created (1: no batching).
        self.batch = 1
        self.batch_wait = destination.config.flow.batch_wait
        self._batch_timer: asyncio.TimerHandle | None = None
        # When each queued claim was claimed (the event loop's clock: batch_wait is
        # real time, also under an injected engine clock).
        self.claimed_at: dict[int, float] = {}
        # The API budget guard.
        self.api_budget = destination.config.flow.api_budget
        self.budget_state = "ok"  # ok | slow | paused
        self.budget_usage: ApiUsage | None = None
        self.pause_reason: str | None = None
        self._next_call_at = 0.0  # engine.monotonic: the earliest next call while slow
        self.queued: collections.deque[Claim] = collections.deque()  # claimed, not started
        self.capacity = destination.concurrency
        self.bucket = (
            TokenBucket(
                destination.rate_per_second,
                destination.burst,
                clock=engine.monotonic,
                sleep=engine.sleep,
            )
            if destination.rate_per_second
            else None
        )
        self.paused_until = 0.0  # wall clock; set by a 429
        self.rate_limited_at: float | None = None  # wall clock of the last 429
        # Waits imposed by the destination (Retry-After) end within this.
        self.max_pause = min(self.retry.max_retry_after, self.retry.max_age)
        engine.metrics.paused(self.name, 0.0)
        self._start_lock = asyncio.Lock()
        self._start_error: DeliveryError | None = None
        self._start_failed_at = 0.0
        self._background: set[asyncio.Task[None]] = set()
        self.wakeup = asyncio.Event()
        self.slot_free = asyncio.Event()
        # One attempt, claim to outcome, gets `budget` seconds (engine.monotonic):
        # send, re-authentication and second send at retry.timeout each, plus 5 s
        # for startup and the token wait to share. The lease outlasts it, or another
        # worker could take the delivery over while the attempt may still send.
        self.budget = self.retry.timeout * 3 + 5
        self.lease = max(engine.worker.lease, self.budget + LEASE_MARGIN)
        self.deadlines: dict[int, float] = {}  # delivery id -> its attempt's deadline
        self.task: asyncio.Task[None] | None = None
        self.running = False  # the claim loop runs (not crashed, not stopped)
        self.restarts = 0

    # ------------------------------------------------------------------ loop

    async def run(self) -> None:
        engine = self.engine
        while not engine.stopping:
            try:
                # A connector that cannot start does not stop the claims: each claimed
                # delivery fails with the startup error, so it is retried on the
                # schedule, dead-lettered (credentials, config) and shown by `show`.
                await self._try_start()
                pause = self.paused_until - engine.clock()
                if pause > 0:
                    await self._idle(min(pause, engine.worker.poll_interval * 4))
                    continue
                self._start_queued()
                room = self._room()
                if room <= 0 or len(self.queued) >= self.capacity * self.batch:
                    self.slot_free.clear()
                    await self._wait(self.slot_free, engine.worker.poll_interval)
                    continue
                # Taken before the claim: the lease starts no earlier than this.
                deadline = engine.monotonic() + self.budget
                claims = await engine.store.claim(
                    destination=self.name,
                    limit=min(room, max(engine.worker.batch_size, self.batch)),
                    lease_seconds=self.lease,
                    now=engine.clock(),
                )
            except StoreError as exc:
                event(log, "claim_failed", logging.WARNING, destination=self.name, error=str(exc))
                await self._idle(engine.worker.poll_interval * 4)
                continue
            if not claims:
                if self.queued or self.sending:
                    self.slot_free.clear()
                    await self._wait(self.slot_free, engine.worker.poll_interval)
                else:
                    await self._idle(engine.worker.poll_interval)
                continue
            at = asyncio.get_running_loop().time()
            for claim in claims:
                self.deadlines[claim.delivery_id] = deadline
                self.claimed_at[claim.delivery_id] = at
            self.queued.extend(claims)
            self._start_queued()

    def _room(self) -> int:
        """How many more deliveries to claim.

        Up to two rounds of the destination's concurrency are held: one being
        sent, one queued or waiting for its outcome's commit. Claiming ahead
        keeps claims large (one store round trip per many deliveries) when the
        engine is paced (see :class:`bridge.retry.IntakeFirst`).
        """
        held = len(self.inflight) + len(self.queued)
        calls = 2 * self.capacity
        if self.dest.rate_per_second:
            # Do not hold leases on more than we can send well within the lease.
            calls = min(calls, max(1, int(self.dest.rate_per_second * self.lease / 4)))
        return calls * self.batch - held

    def _start_queued(self) -> None:
        # A slot is free again once its request is answered: waiting for the
        # outcome's group commit (an fsync) must not idle the destination.
        if self.paused_until > self.engine.clock():
            return
        free = self.capacity - len(self.calls)
        share = self.engine.share
        while (
            free > 0
            and self.queued
            and not self.engine.stopping
            and self._batch_ready()
            and share.take()
        ):
            claims = [self.queued.popleft() for _ in range(min(self.batch, len(self.queued)))]
            key = claims[0].delivery_id
            ids = [claim.delivery_id for claim in claims]
            task = asyncio.create_task(
                self._deliver(claims[0]) if len(claims) == 1 else self._deliver_batch(key, claims)
            )
            self.calls[key] = ids
            for claim in claims:
                self.inflight[claim.delivery_id] = (claim, task)
            self.sending.update(ids)
            task.add_done_callback(functools.partial(self._done, key, ids))
            free -= 1

    def _batch_ready(self) -> bool:
        """May the next call leave with what is queued (``flow.batch_wait``)?"""
        if self.batch <= 1 or self.batch_wait <= 0 or len(self.queued) >= self.batch:
            return True
        loop = asyncio.get_running_loop()
        oldest = self.claimed_at.get(self.queued[0].delivery_id)
        waited = loop.time() - oldest if oldest is not None else self.batch_wait
        if waited >= self.batch_wait:
            return True
        if self._batch_timer is None:

            def fire() -> None:
                self._batch_timer = None
                self._start_queued()

            self._batch_timer = loop.call_later(self.batch_wait - waited, fire)
        return False

    def _sent(self, key: int) -> None:
        ids = self.calls.pop(key, None)
        if ids is not None:
            self.sending.difference_update(ids)
            self._start_queued()
        self.slot_free.set()

    def _done(self, key: int, ids: list[int], _task: object = None) -> None:
        for delivery_id in ids:
            self.inflight.pop(delivery_id, None)
            self.deadlines.pop(delivery_id, None)
            self.claimed_at.pop(delivery_id, None)
        self._sent(key)

    async def _wait(self, ev: asyncio.Event, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ev.wait(), timeout)

    async def _idle(self, seconds: float) -> None:
        self.wakeup.clear()
        await self._wait(self.wakeup, seconds)

    async def _try_start(self) -> None:
        with contextlib.suppress(Exception):
            await self._ensure_started()

    async def _ensure_started(self, timeout: float | None = None) -> None:
        """Start the connector, or raise why it cannot start (as a DeliveryError).

        Concurrent deliveries share one startup, and a failure is remembered for
        STARTUP_RETRY seconds rather than retried by every delivery. ``timeout``
        (at most retry.timeout): what is left of the attempt's deadline.
        """
        if self.started:
            return
        async with self._start_lock:
            if self.started:
                return
            now = self.engine.clock()
            # (batch size is set below, as soon as the connector exists)
            if self._start_error is not None and now - self._start_failed_at < STARTUP_RETRY:
                raise self._start_error
            limit = self.retry.timeout if timeout is None else max(0.0, timeout)
            try:
                if self.connector is None:
                    self.connector = self.dest.create_connector()
                    self.batch = self._batch_size(self.connector)
                async with asyncio.timeout(limit):
                    await self.connector.startup()
            except Exception as exc:
                error = _startup_error(exc, limit)
                self._start_error, self._start_failed_at = error, now
                event(
                    log,
                    "connector_startup_failed",
                    logging.ERROR,
                    destination=self.name,
                    error=error.message,
                )
                raise error from exc
            self.started = True
            self._start_error = None

    def _batch_size(self, connector: Connector) -> int:
        limit = max(1, connector.batch_limit())
        wanted = self.dest.config.flow.batch_size
        return min(limit, wanted) if wanted is not None else limit

    # ------------------------------------------------------------------ one delivery

    async def _deliver(self, claim: Claim) -> None:
        engine = self.engine
        started = engine.clock()
        t0 = time.perf_counter()
        try:
            outcome = await self._attempt(claim, started, t0)
        except _Deferred as deferred:
            # Nothing was sent: paused (a 429), or too little time left before the
            # lease ends. Sleeping here instead could outlast the lease and let
            # another worker send it too.
            self._release_later([(claim.delivery_id, claim.lease_token)], deferred.due)
            return
        finally:
            self._sent(claim.delivery_id)
        await self._finish(claim, outcome)

    async def _finish(self, claim: Claim, outcome: Outcome) -> None:
        """Commit one lead's outcome (fenced by its lease), count and log it."""
        engine = self.engine
        try:
            applied = await engine.finisher.finish(outcome)
        except StoreError as exc:
            # The lease will expire and the delivery will be attempted again.
            event(
                log,
                "finish_failed",
                logging.ERROR,
                lead_id=claim.lead_id,
                destination=self.name,
                error=str(exc),
            )
            return
        if not applied:
            event(
                log,
                "lease_lost",
                logging.WARNING,
                lead_id=claim.lead_id,
                destination=self.name,
                attempt=claim.attempts + 1,
                outcome=outcome.status,
            )
            return
        engine.metrics.delivery(self.name, outcome.attempt_outcome)
        engine.metrics.attempt_latency(self.name, outcome.duration)
        level = logging.INFO if outcome.status in ("delivered", "skipped") else logging.WARNING
        event(
            log,
            "delivery",
            level,
            lead_id=claim.lead_id,
            destination=self.name,
            attempt=claim.attempts + 1,
            outcome=outcome.attempt_outcome,
            status=outcome.status,
            duration_ms=round(outcome.duration * 1000, 1),
            status_code=outcome.status_code,
            remote_id=outcome.remote_id,
            error=outcome.error,
            next_attempt_in=(
                round(outcome.next_attempt_at - engine.clock(), 1)
                if outcome.next_attempt_at
                else None
            ),
        )

    def _outcome(self, claim: Claim, started: float, t0: float, **kw: Any) -> Outcome:
        return Outcome(
            delivery_id=claim.delivery_id,
            lease_token=claim.lease_token,
            started_at=started,
            duration=time.perf_counter() - t0,
            **kw,
        )

    async def _attempt(self, claim: Claim, started: float, t0: float) -> Outcome:
        prepared = self._prepare(claim, started, t0)
        if isinstance(prepared, Outcome):
            return prepared
        return await self._attempt_one(claim, *prepared, started, t0)

    async def _attempt_one(
        self,
        claim: Claim,
        record: Mapping[str, Any],
        context: DeliveryContext,
        started: float,
        t0: float,
    ) -> Outcome:
        try:
            result = await self._send(record, context, self._deadline(claim))
        except _Deferred:
            raise
        except Exception as exc:
            return self._failed(claim, started, t0, exc)
        return self._delivered(claim, started, t0, result)

    def _deadline(self, claim: Claim) -> float:
        return self.deadlines.get(claim.delivery_id, self.engine.monotonic() + self.budget)

    async def _deliver_batch(self, key: int, claims: list[Claim]) -> None:
        """Several claimed deliveries, one API call: each lead its own outcome."""
        engine = self.engine
        started = engine.clock()
        t0 = time.perf_counter()
        outcomes: list[tuple[Claim, Outcome]] = []
        ready: list[tuple[Claim, Mapping[str, Any], DeliveryContext]] = []
        try:
            for claim in claims:
                prepared = self._prepare(claim, started, t0)
                if isinstance(prepared, Outcome):  # skipped, or dead (mapping, payload)
                    outcomes.append((claim, prepared))
                else:
                    ready.append((claim, *prepared))
            if len(ready) == 1:
                claim = ready[0][0]
                outcomes.append((claim, await self._attempt_one(*ready[0], started, t0)))
            elif ready:
                outcomes.extend(await self._attempt_batch(ready, started, t0))
        except _Deferred as deferred:
            # Nothing was sent (paused, or too little time left): leases back.
            self._release_later(
                [(claim.delivery_id, claim.lease_token) for claim, _, _ in ready], deferred.due
            )
        finally:
            self._sent(key)
        if outcomes:
            await asyncio.gather(*(self._finish(claim, outcome) for claim, outcome in outcomes))

    async def _attempt_batch(
        self,
        ready: list[tuple[Claim, Mapping[str, Any], DeliveryContext]],
        started: float,
        t0: float,
    ) -> list[tuple[Claim, Outcome]]:
        deadline = min(self._deadline(claim) for claim, _, _ in ready)
        items = [(record, context) for _, record, context in ready]

        async def call(connector: Connector) -> list[DeliveryResult | DeliveryError]:
            results = await connector.send_batch(items)
            if len(results) != len(items):
                raise RetryableError(
                    f"the connector answered {len(results)} results for {len(items)} leads"
                )
            return results

        try:
            results = await self._call(call, deadline)
        except _Deferred:
            raise
        except Exception as exc:
            # The whole call failed: for each lead as if its own send had failed.
            return [(claim, self._failed(claim, started, t0, exc)) for claim, _, _ in ready]
        out = []
        for (claim, _, _), result in zip(ready, results, strict=True):
            if isinstance(result, DeliveryResult):
                out.append((claim, self._delivered(claim, started, t0, result)))
            else:
                out.append((claim, self._failed(claim, started, t0, result)))
        return out

    def _delivered(
        self, claim: Claim, started: float, t0: float, result: DeliveryResult
    ) -> Outcome:
        return self._outcome(
            claim,
            started,
            t0,
            status="delivered",
            attempt_outcome="delivered",
            remote_id=result.remote_id,
            status_code=result.status_code,
        )

    def _prepare(
        self, claim: Claim, started: float, t0: float
    ) -> Outcome | tuple[dict[str, Any], DeliveryContext]:
        """Payload, ``when:`` and mapping: the record to send, or the lead's outcome."""
        if claim.payload is None:
            return self._dead(
                claim, started, t0, "the lead's payload is no longer stored (purged or erased)"
            )
        try:
            lead = json.loads(claim.payload)
        except ValueError:
            return self._dead(claim, started, t0, "stored payload is not valid JSON")
        if self.dest.when is not None and not self.dest.when.matches(lead):
            return self._outcome(
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
            return self._dead(claim, started, t0, f"mapping error: {exc}")
        if mapped.unmapped_keys:
            self.engine.metrics.unmapped(self.name, mapped.unmapped_keys)
        context = DeliveryContext(
            lead_id=claim.lead_id,
            destination=self.name,
            attempt=claim.attempts + 1,
            idempotency_key=idempotency_key(claim.lead_id, self.name),
            lead=lead,
            received_at=claim.received_at,
        )
        return mapped.record, context

    def _failed(self, claim: Claim, started: float, t0: float, exc: BaseException) -> Outcome:
        """The outcome of a lead whose send raised ``exc`` (or whose batch entry is it)."""
        if isinstance(exc, AuthError):
            return self._dead(
                claim,
                started,
                t0,
                f"check the credentials of destination {self.name}: {exc.message}",
                exc,
            )
        if isinstance(exc, PermanentError):
            return self._dead(claim, started, t0, exc.message, exc)
        if isinstance(exc, RetryableError):
            return self._retry(claim, started, t0, exc.message, exc)
        if isinstance(exc, TimeoutError):
            return self._retry(
                claim,
                started,
                t0,
                f"the attempt timed out after {time.perf_counter() - t0:.1f}s "
                f"(retry.timeout {self.retry.timeout:g}s per call)",
            )
        if isinstance(exc, DeliveryError):  # a subclass we do not know: treat as permanent
            return self._dead(claim, started, t0, exc.message, exc)
        permanent = classify_unexpected(exc)
        if permanent is not None:
            return self._dead(claim, started, t0, permanent.message, permanent)
        # Nothing classified this: retry, and keep the traceback for the operator.
        log.error(
            "event=unclassified_error lead_id=%s destination=%s error=%s",
            claim.lead_id,
            self.name,
            type(exc).__name__,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        return self._retry(claim, started, t0, f"unexpected error: {_safe_error(exc)}")

    def _dead(
        self,
        claim: Claim,
        started: float,
        t0: float,
        message: str,
        exc: DeliveryError | None = None,
    ) -> Outcome:
        return self._outcome(
            claim,
            started,
            t0,
            status="dead",
            attempt_outcome="dead",
            error=message,
            status_code=exc.status_code if exc else None,
        )

    def _retry(
        self,
        claim: Claim,
        started: float,
        t0: float,
        message: str,
        exc: RetryableError | None = None,
    ) -> Outcome:
        now = self.engine.clock()
        status_code = exc.status_code if exc else None
        retry_after = self._bounded(exc.retry_after if exc else None)
        if isinstance(exc, RateLimited):
            return self._throttled(claim, started, t0, message, exc, now, retry_after)
        decision = plan_retry(
            attempts_made=claim.attempts + 1,
            created_at=claim.created_at,
            now=now,
            schedule=self.retry.schedule,
            jitter=self.retry.jitter,
            max_age=self.retry.max_age,
            retry_after=retry_after,
            rng=self.engine.rng,
        )
        if decision.give_up:
            return self._dead(claim, started, t0, f"{decision.reason}; last error: {message}", exc)
        return self._outcome(
            claim,
            started,
            t0,
            status="pending",
            attempt_outcome="retry",
            next_attempt_at=decision.next_attempt_at,
            error=message,
            status_code=status_code,
        )

    def _bounded(self, retry_after: float | None) -> float | None:
        """A wait the destination asked for, within retry.max_retry_after (and max_age)."""
        if retry_after is None:
            return None
        return min(max(retry_after, 0.0), self.max_pause)

    def _throttled(
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
        pause = (
            retry_after if retry_after is not None else min(self.retry.schedule[0], self.max_pause)
        )
        self.pause(now, pause)
        if self.paused_until - claim.created_at > self.retry.max_age:
            reason = (
                f"gave up: rate limited after {human_duration(now - claim.created_at)}, "
                f"the pause would pass max_age {human_duration(self.retry.max_age)}"
            )
            return self._dead(claim, started, t0, f"{reason}; last error: {message}", exc)
        return self._outcome(
            claim,
            started,
            t0,
            status="pending",
            attempt_outcome="rate_limited",
            next_attempt_at=self.paused_until,
            error=message,
            status_code=exc.status_code,
            count_attempt=False,
        )

    def pause(self, now: float, seconds: float, reason: str = "rate_limited") -> None:
        """Slow the whole destination, not only one lead: nothing is sent until then."""
        if reason == "rate_limited":
            self.rate_limited_at = now
        if now + seconds > self.paused_until:
            self.pause_reason = reason
        self.paused_until = max(self.paused_until, now + seconds)
        self.engine.metrics.paused(self.name, self.paused_until)
        self._defer_queued()
        if self.bucket is not None:
            self.bucket.drain()

    def _gate(self, deadline: float, need: float) -> None:
        """May a request leave now? Not while paused, nor with less than ``need``
        seconds left of the attempt's deadline; else the attempt is deferred."""
        now = self.engine.clock()
        if self.paused_until > now:
            raise _Deferred(self.paused_until)
        if deadline - self.engine.monotonic() < need:
            raise _Deferred(now)

    async def _send(
        self, record: Mapping[str, Any], context: DeliveryContext, deadline: float
    ) -> DeliveryResult:
        return await self._call(lambda connector: connector.send(record, context), deadline)

    async def _call(self, op: Callable[[Connector], Awaitable[T]], deadline: float) -> T:
        """One API call (a send or a batch): gates, rate token, timeout, connection
        retries and one re-authentication; then the API budget guard looks at it."""
        engine = self.engine
        timeout = self.retry.timeout

        def limit() -> float:
            # Each step gets retry.timeout, and never more than the deadline leaves.
            return max(0.0, min(timeout, deadline - engine.monotonic()))

        self._gate(deadline, need=timeout)
        await self._ensure_started(limit())
        assert self.connector is not None
        connector = self.connector
        if self.bucket is not None:
            # The token must come while a whole send still fits before the deadline.
            if not await self.bucket.acquire(deadline - timeout):
                raise _Deferred(engine.clock() + self.bucket.ready_in())
            # A 429 may have paused the destination while this attempt waited.
            self._gate(deadline, need=timeout)
        await self._budget_pace(deadline, timeout)

        retries = self.retry.connect_retries
        pace = self.retry.connect_retry_wait

        async def once() -> T:
            self._gate(deadline, need=0.0)
            try:
                return await op(connector)
            except Exception as exc:
                self._observe_budget(connector)
                if retries == 0 or not _is_connection_error(exc):
                    raise
            # The request never reached the remote application: a few quick retries.
            # tenacity only on this rare path; set up per send, it cost ~7% of the
            # event loop's time at a few thousand deliveries a second. Waits are
            # pace, 2*pace, 4*pace... capped at 4 s, counting the try above.
            await engine.sleep(min(pace, 4))
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(_is_connection_error),
                stop=stop_after_attempt(retries),
                wait=wait_exponential(multiplier=pace * 2, max=4),
                sleep=engine.sleep,
                reraise=True,
            ):
                with attempt:
                    self._gate(deadline, need=0.0)
                    return await op(connector)
            raise AssertionError("unreachable")  # pragma: no cover

        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for wraps each call
            # in one more task.
            async with asyncio.timeout(limit()):
                result = await once()
            self._observe_budget(connector)
            return result
        except AuthError as first:
            if not self.started:
                raise  # the connector's own startup (its authentication) was refused
            # One re-authentication, then one more try; a second AuthError is final.
            try:
                async with asyncio.timeout(limit()):
                    await connector.reauthenticate()
            except NotImplementedError:
                raise first from None
            except DeliveryError:
                raise
            except Exception as exc:
                raise AuthError(f"re-authentication failed: {_safe_error(exc)}") from exc
            async with asyncio.timeout(limit()):
                result = await once()
            self._observe_budget(connector)
            return result

    # ------------------------------------------------------------------ API budget guard

    async def _budget_pace(self, deadline: float, timeout: float) -> None:
        """Above the soft share of the API budget: one call per slow_interval."""
        if self.budget_state != "slow":
            return
        engine = self.engine
        now = engine.monotonic()
        at = max(now, self._next_call_at)
        if deadline - at < timeout:
            raise _Deferred(engine.clock() + (at - now))
        self._next_call_at = at + self.api_budget.slow_interval
        if at > now:
            await engine.sleep(at - now)
            self._gate(deadline, need=timeout)

    def _observe_budget(self, connector: Connector) -> None:
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
        self.engine.metrics.api_budget(self.name, share, state)
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
            self.pause(self.engine.clock(), self.api_budget.recheck, reason="api_budget")

    def _defer_queued(self) -> None:
        """Give the leases of claimed-but-unsent deliveries back, due when the pause ends."""
        if not self.queued:
            return
        leases = [(c.delivery_id, c.lease_token) for c in self.queued]
        for claim in self.queued:
            self.deadlines.pop(claim.delivery_id, None)
            self.claimed_at.pop(claim.delivery_id, None)
        self.queued.clear()
        self._release_later(leases, self.paused_until)

    def _release_later(self, leases: list[tuple[int, str]], due: float) -> None:
        task = asyncio.create_task(self._release(leases, due))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _release(self, leases: list[tuple[int, str]], due: float) -> None:
        try:
            await self.engine.store.release(leases, due)
        except StoreError as exc:  # the leases expire by themselves
            event(log, "release_failed", logging.WARNING, destination=self.name, error=str(exc))

    # ------------------------------------------------------------------ shutdown

    async def stop(self, timeout: float) -> None:
        self.wakeup.set()
        self.slot_free.set()
        if self._batch_timer is not None:
            self._batch_timer.cancel()
            self._batch_timer = None
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self.task, timeout)
        leftover = [(claim.delivery_id, claim.lease_token) for claim in self.queued]
        self.queued.clear()
        running = list(self.inflight.values())
        if running:
            _, still = await asyncio.wait([task for _, task in running], timeout=timeout)
            for claim, task in running:
                if task in still:
                    task.cancel()
                    # Fenced: if its outcome was committed after all, this is a no-op.
                    leftover.append((claim.delivery_id, claim.lease_token))
            if still:
                await asyncio.wait(still, timeout=5)
        if self._background:
            await asyncio.wait(list(self._background), timeout=5)
        if leftover:
            with contextlib.suppress(StoreError):
                released = await self.engine.store.release(leftover, self.engine.clock())
                event(log, "leases_released", destination=self.name, count=released)
        if self.connector is not None:
            with contextlib.suppress(Exception):
                await self.connector.close()


class Finisher:
    """Hands outcomes to the store in batches: one ``finish`` call per commit.

    While one call is being committed, the outcomes that arrive meanwhile wait
    and go together in the next one (group commit, as the store does for its
    writes), so the store applies them with a few set-based statements instead
    of two per delivery. Each caller still learns only after the commit whether
    its outcome was applied: nothing counts as delivered before that.
    """

    def __init__(self, store: Store, observe: Callable[[float], None]) -> None:
        self.store = store
        self.observe = observe  # the commit round trip, a congestion signal
        self._pending: list[tuple[Outcome, asyncio.Future[bool]]] = []
        self._busy = False

    async def finish(self, outcome: Outcome) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((outcome, future))
        if not self._busy:
            self._busy = True
            asyncio.get_running_loop().call_soon(self._next)
        try:
            # Shielded: a cancelled delivery must not cancel its neighbours' commit.
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(_consume)  # nobody will read its result now
            raise

    def _next(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            self._busy = False
            return
        task = asyncio.create_task(self._commit(batch))
        task.add_done_callback(lambda _: self._next())

    async def _commit(self, batch: list[tuple[Outcome, asyncio.Future[bool]]]) -> None:
        start = time.perf_counter()
        try:
            applied = await self.store.finish([outcome for outcome, _ in batch])
            self.observe(time.perf_counter() - start)
        except Exception as exc:  # StoreError, or a bug: every caller hears of it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), ok in zip(batch, applied, strict=True):
            if not future.done():
                future.set_result(ok)


def _consume(future: asyncio.Future[bool]) -> None:
    if not future.cancelled():
        future.exception()


def _startup_error(exc: BaseException, timeout: float) -> DeliveryError:
    """Why a connector cannot start, in the delivery error taxonomy."""
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, TimeoutError):
        return RetryableError(f"connector startup timed out after {timeout:g}s")
    if isinstance(exc, ConfigError):
        return PermanentError(f"connector cannot start: {exc}")
    return RetryableError(f"connector startup failed: {_safe_error(exc)}")


def _safe_error(exc: BaseException) -> str:
    # Unclassified exception messages can quote payloads; the log filter masks
    # emails and phones, and we keep it short.
    text = f"{type(exc).__name__}: {exc}"
    return text[:300]


class Engine:
    def __init__(
        self,
        store: Store,
        destinations: list[Destination],
        metrics: Metrics,
        worker: WorkerConfig,
        *,
        clock: Clock = time.time,
        monotonic: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        restart_backoff: float = 1.0,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.worker = worker
        self.clock = clock
        self.monotonic = monotonic
        self.sleep = sleep
        self.rng = rng
        self.restart_backoff = restart_backoff
        self.stopping = False
        self._stop_event = asyncio.Event()
        self.share = IntakeFirst()
        self.finisher = Finisher(store, self.share.observe)
        self._share_task: asyncio.Task[None] | None = None
        self.workers = [DestinationWorker(self, d) for d in destinations if d.config.enabled]

    async def start(self) -> None:
        self._share_task = asyncio.create_task(
            self.share.run(self._kick), name="lead-bridge-intake-first"
        )
        for w in self.workers:
            # Starting counts as running: only a crashed loop is down (else /readyz
            # would name every destination until its loop is first scheduled).
            w.running = True
            w.task = asyncio.create_task(self._supervise(w), name=f"lead-bridge-worker-{w.name}")

    async def _supervise(self, w: DestinationWorker) -> None:
        """Run a worker's loop; if it crashes, log and count it, restart it with backoff.

        Whatever ends the loop (EMFILE while the SQLite writer restarts, a bug) must
        not stop the destination's deliveries silently: meanwhile the worker shows as
        down (``lead_bridge_worker_up`` 0, ``/readyz``, :meth:`destination_states`).
        """
        backoff = self.restart_backoff
        while not self.stopping:
            w.running = True
            self.metrics.worker_running(w.name, True)
            try:
                await w.run()
                return  # stopping
            except Exception as exc:
                w.running = False
                w.restarts += 1
                self.metrics.worker_running(w.name, False)
                self.metrics.worker_restarted(w.name)
                # The type and the errno only: an exception's text may quote data.
                event(
                    log,
                    "worker_crashed",
                    logging.ERROR,
                    destination=w.name,
                    error=type(exc).__name__,
                    errno=getattr(exc, "errno", None),
                    restarts=w.restarts,
                    restart_in=round(backoff, 2),
                )
            finally:
                w.running = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), backoff)
            backoff = min(backoff * 2, MAX_RESTART_BACKOFF)

    def worker_running(self, destination: str) -> bool:
        """Whether the destination's claim loop runs (False while it waits to restart)."""
        return any(w.running for w in self.workers if w.name == destination)

    def workers_down(self) -> list[str]:
        """Destinations whose claim loop is not running (crashed, waiting to restart)."""
        if self.stopping:
            return []
        return sorted(w.name for w in self.workers if w.task is not None and not w.running)

    def destination_states(self) -> dict[str, dict[str, Any]]:
        """Per destination, as plain data (admin, status, console): is it paused or
        rate limited, and does its worker run."""
        now = self.clock()
        states: dict[str, dict[str, Any]] = {}
        for w in self.workers:
            paused = w.paused_until > now
            states[w.name] = {
                "paused": paused,
                "paused_until": w.paused_until if paused else None,
                "rate_limited_at": w.rate_limited_at,
                "worker_running": w.running,
                "worker_restarts": w.restarts,
                "pause_reason": w.pause_reason if paused else None,
                "in_flight": len(w.sending),
                "claimed": len(w.inflight) + len(w.queued),
                "batch_size": w.batch,
                "api_budget": (
                    {
                        "state": w.budget_state,
                        "used": w.budget_usage.used,
                        "limit": w.budget_usage.limit,
                        "window": w.budget_usage.window,
                        "share": round(w.budget_usage.share, 4),
                    }
                    if w.budget_usage is not None
                    else None
                ),
            }
        return states

    def _kick(self) -> None:
        for w in self.workers:
            w._start_queued()

    def wake(self) -> None:
        """New deliveries are due (a replay, say): claim now, not at the next poll."""
        for w in self.workers:
            w.wakeup.set()

    def intake_committed(self, latency: float) -> None:
        """Intake in this process committed leads, waiting ``latency`` seconds for it.

        That is how the engine knows it shares the loop and the store with intake,
        and the wait intake saw is the congestion signal it paces itself by (see
        :class:`bridge.retry.IntakeFirst`).
        """
        self.share.intake_active()
        self.share.observe(latency)
        self.wake()

    async def stop(self, timeout: float) -> None:
        """Stop claiming, let in-flight attempts finish within ``timeout``, release leases."""
        self.stopping = True
        self._stop_event.set()
        if self._share_task is not None:
            self._share_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._share_task
        await asyncio.gather(*(w.stop(timeout) for w in self.workers))
        event(log, "engine_stopped")
