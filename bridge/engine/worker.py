"""One destination's claim loop: claim due deliveries, hold them, start calls as
slots (its concurrency) free up, give leases back when it pauses or stops.

Batches: a connector with ``send_batch`` (HubSpot, Salesforce) gets up to its
batch size of claimed deliveries per API call. A call starts as soon as a slot is
free (a lone lead is not delayed; ``flow.batch_wait`` may hold it to fill up), so
batches grow only while a backlog waits for slots or rate tokens.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging

from bridge.destinations import Destination
from bridge.engine.attempt import Attempts
from bridge.engine.connection import ConnectorHandle
from bridge.engine.context import EngineContext
from bridge.engine.outcomes import Outcomes
from bridge.engine.throttle import Throttle
from bridge.errors import StoreError
from bridge.logs import event
from bridge.store.base import Claim

log = logging.getLogger("lead_bridge.engine")

# How much longer a lease lasts than the attempt's deadline: room for the outcome's commit.
LEASE_MARGIN = 10.0


class DestinationWorker:
    def __init__(self, ctx: EngineContext, destination: Destination) -> None:
        self.ctx = ctx
        self.dest = destination
        self.name = destination.name
        self.retry = destination.config.retry
        self.throttle = Throttle(
            destination,
            ctx.metrics,
            clock=ctx.clock,
            monotonic=ctx.monotonic,
            sleep=ctx.sleep,
            on_pause=self._defer_queued,
        )
        self.handle = ConnectorHandle(
            destination, ctx.clock, request_gate=self.throttle.next_request
        )
        outcomes = Outcomes(destination, self.throttle, ctx.metrics, clock=ctx.clock, rng=ctx.rng)
        self.attempts = Attempts(
            ctx,
            self.handle,
            self.throttle,
            outcomes,
            deadline=self._deadline,
            sent=self._sent,
            release_later=self._release_later,
        )
        # Claimed and not yet finished (committed); ``sending`` is the subset whose
        # attempt is still running, i.e. holds one of the destination's slots.
        self.inflight: dict[int, tuple[Claim, asyncio.Task[None]]] = {}
        self.sending: set[int] = set()
        # Running API calls (one slot each), by key (the first delivery id) -> their ids.
        self.calls: dict[int, list[int]] = {}
        self.batch_wait = destination.config.flow.batch_wait
        self._batch_timer: asyncio.TimerHandle | None = None
        # When each queued claim was claimed (the event loop's clock: batch_wait is
        # real time, also under an injected engine clock).
        self.claimed_at: dict[int, float] = {}
        self.queued: collections.deque[Claim] = collections.deque()  # claimed, not started
        self.capacity = destination.concurrency
        self._background: set[asyncio.Task[None]] = set()
        self.wakeup = asyncio.Event()
        self.slot_free = asyncio.Event()
        # One attempt, claim to outcome, gets `budget` seconds (ctx.monotonic):
        # send, re-authentication and second send at retry.timeout each, plus 5 s
        # for startup and the token wait to share. The lease outlasts it, or another
        # worker could take the delivery over while the attempt may still send.
        self.budget = self.retry.timeout * 3 + 5
        self.lease = max(ctx.worker.lease, self.budget + LEASE_MARGIN)
        self.deadlines: dict[int, float] = {}  # delivery id -> its attempt's deadline
        self.task: asyncio.Task[None] | None = None
        self.running = False  # the claim loop runs (not crashed, not stopped)
        self.restarts = 0

    @property
    def batch(self) -> int:
        """Leads per API call (1 until the connector exists, or without batching)."""
        return self.handle.batch

    # ------------------------------------------------------------------ loop

    async def run(self) -> None:
        ctx = self.ctx
        poll = ctx.worker.poll_interval
        while not ctx.stopping:
            try:
                await self.handle.try_start()
                pause = self.throttle.paused_until - ctx.clock()
                if pause > 0:
                    await self._idle(min(pause, poll * 4))
                    continue
                self.start_queued()
                room = self._room()
                if room <= 0 or len(self.queued) >= self.capacity * self.batch:
                    self.slot_free.clear()
                    await self._wait(self.slot_free, poll)
                    continue
                # Taken before the claim: the lease starts no earlier than this.
                deadline = ctx.monotonic() + self.budget
                claims = await ctx.store.claim(
                    destination=self.name,
                    limit=min(room, max(ctx.worker.batch_size, self.batch)),
                    lease_seconds=self.lease,
                    now=ctx.clock(),
                )
            except StoreError as exc:
                event(log, "claim_failed", logging.WARNING, destination=self.name, error=str(exc))
                await self._idle(poll * 4)
                continue
            if not claims:
                if self.queued or self.sending:
                    self.slot_free.clear()
                    await self._wait(self.slot_free, poll)
                else:
                    await self._idle(poll)
                continue
            at = asyncio.get_running_loop().time()
            for claim in claims:
                self.deadlines[claim.delivery_id] = deadline
                self.claimed_at[claim.delivery_id] = at
            self.queued.extend(claims)
            self.start_queued()

    def _room(self) -> int:
        """How many more deliveries to claim.

        Up to three rounds of the destination's concurrency are held: one being
        sent, one queued, one waiting for its outcomes' commit. Claiming ahead
        keeps claims large (one store round trip per many deliveries) and the
        slots busy while the store spaces the engine's writes behind intake's
        (see :mod:`bridge.store.writer_share`), when a commit takes a while.
        """
        held = len(self.inflight) + len(self.queued)
        calls = 3 * self.capacity
        if self.dest.rate_per_second:
            # Do not hold leases on more than we can send well within the lease.
            calls = min(calls, max(1, int(self.dest.rate_per_second * self.lease / 4)))
        return calls * self.batch - held

    def start_queued(self) -> None:
        # A slot is free again once its request is answered: waiting for the
        # outcome's group commit (an fsync) must not idle the destination.
        if self.throttle.paused():
            return
        free = self.capacity - len(self.calls)
        while free > 0 and self.queued and not self.ctx.stopping and self._batch_ready():
            claims = [self.queued.popleft() for _ in range(min(self.batch, len(self.queued)))]
            key = claims[0].delivery_id
            ids = [claim.delivery_id for claim in claims]
            task = asyncio.create_task(
                self.attempts.deliver(claims[0])
                if len(claims) == 1
                else self.attempts.deliver_batch(key, claims)
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
                self.start_queued()

            self._batch_timer = loop.call_later(self.batch_wait - waited, fire)
        return False

    def _deadline(self, claim: Claim) -> float:
        return self.deadlines.get(claim.delivery_id, self.ctx.monotonic() + self.budget)

    def _sent(self, key: int) -> None:
        ids = self.calls.pop(key, None)
        if ids is not None:
            self.sending.difference_update(ids)
            self.start_queued()
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

    # ------------------------------------------------------------------ leases back

    def _defer_queued(self) -> None:
        """Give the leases of claimed-but-unsent deliveries back, due when the pause ends."""
        if not self.queued:
            return
        leases = [(c.delivery_id, c.lease_token) for c in self.queued]
        for claim in self.queued:
            self.deadlines.pop(claim.delivery_id, None)
            self.claimed_at.pop(claim.delivery_id, None)
        self.queued.clear()
        self._release_later(leases, self.throttle.paused_until)

    def _release_later(self, leases: list[tuple[int, str]], due: float) -> None:
        task = asyncio.create_task(self._release(leases, due))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _release(self, leases: list[tuple[int, str]], due: float) -> None:
        try:
            await self.ctx.store.release(leases, due)
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
                released = await self.ctx.store.release(leftover, self.ctx.clock())
                event(log, "leases_released", destination=self.name, count=released)
        await self.handle.close()
