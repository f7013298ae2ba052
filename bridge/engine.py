"""The delivery engine: claim due deliveries, map, call the connector, record the outcome.

One ``DestinationWorker`` per destination, each with its own claim loop,
concurrency limit, token bucket and pause (after a 429), so a slow or stuck
destination never holds up another one, nor intake.

Per attempt::

    claim (lease) -> when: filter -> mapping -> rate limit -> connector.send
        (tenacity: short retry of connection errors, bounded by retry.timeout)
    -> delivered | pending (backoff / Retry-After) | dead | skipped   (finish, fenced)
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
from collections.abc import Callable
from typing import Any

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
)
from bridge.logs import event
from bridge.metrics import Metrics
from bridge.retry import Clock, IntakeFirst, Sleep, TokenBucket, plan_retry
from bridge.store.base import Claim, Outcome, Store
from connectors.base import Connector, DeliveryContext, DeliveryResult

log = logging.getLogger("lead_bridge.engine")

# How long a destination's connector startup failure waits before trying again.
STARTUP_RETRY = 30.0


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
        engine.metrics.paused(self.name, 0.0)
        self._start_lock = asyncio.Lock()
        self._start_error: DeliveryError | None = None
        self._start_failed_at = 0.0
        self._background: set[asyncio.Task[None]] = set()
        self.wakeup = asyncio.Event()
        self.slot_free = asyncio.Event()
        # An attempt is bounded by retry.timeout, or three times that with a
        # re-authentication; the lease must outlast it or another worker would
        # take the delivery over while it is still running.
        self.lease = max(engine.worker.lease, self.retry.timeout * 3 + 5)
        self.task: asyncio.Task[None] | None = None

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
                if room <= 0 or len(self.queued) >= self.capacity:
                    self.slot_free.clear()
                    await self._wait(self.slot_free, engine.worker.poll_interval)
                    continue
                claims = await engine.store.claim(
                    destination=self.name,
                    limit=min(room, engine.worker.batch_size),
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
        bound = 2 * self.capacity
        if self.dest.rate_per_second:
            # Do not hold leases on more than we can send well within the lease.
            bound = min(bound, max(1, int(self.dest.rate_per_second * self.lease / 4)))
        return bound - held

    def _start_queued(self) -> None:
        # A slot is free again once its request is answered: waiting for the
        # outcome's group commit (an fsync) must not idle the destination.
        if self.paused_until > self.engine.clock():
            return
        free = self.capacity - len(self.sending)
        share = self.engine.share
        while free > 0 and self.queued and not self.engine.stopping and share.take():
            claim = self.queued.popleft()
            task = asyncio.create_task(self._deliver(claim))
            self.inflight[claim.delivery_id] = (claim, task)
            self.sending.add(claim.delivery_id)
            task.add_done_callback(functools.partial(self._done, claim.delivery_id))
            free -= 1

    def _sent(self, delivery_id: int) -> None:
        if delivery_id in self.sending:
            self.sending.discard(delivery_id)
            self._start_queued()
        self.slot_free.set()

    def _done(self, delivery_id: int, _task: object = None) -> None:
        self.inflight.pop(delivery_id, None)
        self._sent(delivery_id)

    async def _wait(self, ev: asyncio.Event, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ev.wait(), timeout)

    async def _idle(self, seconds: float) -> None:
        self.wakeup.clear()
        await self._wait(self.wakeup, seconds)

    async def _try_start(self) -> None:
        with contextlib.suppress(Exception):
            await self._ensure_started()

    async def _ensure_started(self) -> None:
        """Start the connector, or raise why it cannot start (as a DeliveryError).

        Concurrent deliveries share one startup, and a failure is remembered for
        STARTUP_RETRY seconds rather than retried by every delivery.
        """
        if self.started:
            return
        async with self._start_lock:
            if self.started:
                return
            now = self.engine.clock()
            if self._start_error is not None and now - self._start_failed_at < STARTUP_RETRY:
                raise self._start_error
            try:
                if self.connector is None:
                    self.connector = self.dest.create_connector()
                async with asyncio.timeout(self.retry.timeout):
                    await self.connector.startup()
            except Exception as exc:
                error = _startup_error(exc, self.retry.timeout)
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

    # ------------------------------------------------------------------ one delivery

    async def _deliver(self, claim: Claim) -> None:
        engine = self.engine
        started = engine.clock()
        if self.paused_until > started:
            # Rate limited meanwhile: due again when the pause ends. Sleeping here
            # instead could outlast the lease and let another worker send it too.
            self.queued.append(claim)
            self._sent(claim.delivery_id)
            self._defer_queued()
            return
        t0 = time.perf_counter()
        try:
            outcome = await self._attempt(claim, started, t0)
        finally:
            self._sent(claim.delivery_id)
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
        try:
            result = await self._send(mapped.record, context)
        except AuthError as exc:
            return self._dead(
                claim,
                started,
                t0,
                f"check the credentials of destination {self.name}: {exc.message}",
                exc,
            )
        except PermanentError as exc:
            return self._dead(claim, started, t0, exc.message, exc)
        except RetryableError as exc:
            return self._retry(claim, started, t0, exc.message, exc)
        except TimeoutError:
            return self._retry(
                claim, started, t0, f"the attempt timed out after {self.retry.timeout:g}s"
            )
        except DeliveryError as exc:  # a subclass we do not know: treat as permanent
            return self._dead(claim, started, t0, exc.message, exc)
        except Exception as exc:
            # Nothing classified this: retry, and keep the traceback for the operator.
            log.error(
                "event=unclassified_error lead_id=%s destination=%s error=%s",
                claim.lead_id,
                self.name,
                type(exc).__name__,
                exc_info=True,
            )
            return self._retry(claim, started, t0, f"unexpected error: {_safe_error(exc)}")
        return self._outcome(
            claim,
            started,
            t0,
            status="delivered",
            attempt_outcome="delivered",
            remote_id=result.remote_id,
            status_code=result.status_code,
        )

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
        retry_after = exc.retry_after if exc else None
        rate_limited = isinstance(exc, RateLimited)
        if rate_limited:
            pause = retry_after if retry_after is not None else self.retry.schedule[0]
            # Slow the whole destination, not only this lead.
            self.paused_until = max(self.paused_until, now + pause)
            self.engine.metrics.paused(self.name, self.paused_until)
            self._defer_queued()
            if self.bucket is not None:
                self.bucket.drain()
            retry_after = pause
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
            attempt_outcome="rate_limited" if rate_limited else "retry",
            next_attempt_at=decision.next_attempt_at,
            error=message,
            status_code=status_code,
        )

    async def _send(self, record: dict[str, Any], context: DeliveryContext) -> DeliveryResult:
        await self._ensure_started()
        assert self.connector is not None
        connector = self.connector
        engine = self.engine
        if self.bucket is not None:
            await self.bucket.acquire()

        retries = self.retry.connect_retries
        pace = self.retry.connect_retry_wait

        async def once() -> DeliveryResult:
            try:
                return await connector.send(record, context)
            except Exception as exc:
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
                    return await connector.send(record, context)
            raise AssertionError("unreachable")  # pragma: no cover

        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for wraps each call
            # in one more task.
            async with asyncio.timeout(self.retry.timeout):
                return await once()
        except AuthError as first:
            if not self.started:
                raise  # the connector's own startup (its authentication) was refused
            # One re-authentication, then one more try; a second AuthError is final.
            try:
                async with asyncio.timeout(self.retry.timeout):
                    await connector.reauthenticate()
            except NotImplementedError:
                raise first from None
            except DeliveryError:
                raise
            except Exception as exc:
                raise AuthError(f"re-authentication failed: {_safe_error(exc)}") from exc
            async with asyncio.timeout(self.retry.timeout):
                return await once()

    def _defer_queued(self) -> None:
        """Give the leases of claimed-but-unsent deliveries back, due when the pause ends."""
        if not self.queued:
            return
        leases = [(c.delivery_id, c.lease_token) for c in self.queued]
        self.queued.clear()
        task = asyncio.create_task(self._release(leases, self.paused_until))
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
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.worker = worker
        self.clock = clock
        self.monotonic = monotonic
        self.sleep = sleep
        self.rng = rng
        self.stopping = False
        self.share = IntakeFirst()
        self.finisher = Finisher(store, self.share.observe)
        self._share_task: asyncio.Task[None] | None = None
        self.workers = [DestinationWorker(self, d) for d in destinations if d.config.enabled]

    async def start(self) -> None:
        self._share_task = asyncio.create_task(
            self.share.run(self._kick), name="lead-bridge-intake-first"
        )
        for w in self.workers:
            w.task = asyncio.create_task(w.run(), name=f"lead-bridge-worker-{w.name}")

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
        if self._share_task is not None:
            self._share_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._share_task
        await asyncio.gather(*(w.stop(timeout) for w in self.workers))
        event(log, "engine_stopped")
