"""One attempt, from its claim to its committed outcome, within one deadline.

Per attempt::

    claim (lease) -> when: filter -> mapping -> rate limit -> connector.send
        (tenacity: short retry of connection errors, bounded by retry.timeout)
    -> delivered | pending (backoff / Retry-After) | dead | skipped   (finish, fenced)

The deadline covers startup, the wait for a rate-limit token, send,
re-authentication and second send; the worker's lease outlasts it. A batch
(``send_batch``) is a transport detail: each lead is mapped, filtered and
finished on its own; a failure of the whole call counts for each lead as if its
own send had failed. One rate token per API call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from bridge.engine.connection import ConnectorHandle
from bridge.engine.context import EngineContext
from bridge.engine.outcomes import Outcomes, safe_error
from bridge.engine.throttle import Deferred, Throttle
from bridge.errors import AuthError, DeliveryError, RateLimited, RetryableError, StoreError
from bridge.logs import event
from bridge.store.base import Claim, Outcome
from connectors.base import Connector, DeliveryContext, DeliveryResult

T = TypeVar("T")

log = logging.getLogger("lead_bridge.engine")

Ready = tuple[Claim, Mapping[str, Any], DeliveryContext]


def _is_connection_error(exc: BaseException) -> bool:
    # A retryable error without an HTTP status or a Retry-After never reached the
    # remote application: worth a quick second try inside the same attempt.
    return (
        isinstance(exc, RetryableError)
        and not isinstance(exc, RateLimited)
        and exc.status_code is None
        and exc.retry_after is None
    )


class Attempts:
    """Runs one destination's attempts; the worker decides when and which."""

    def __init__(
        self,
        ctx: EngineContext,
        handle: ConnectorHandle,
        throttle: Throttle,
        outcomes: Outcomes,
        *,
        deadline: Callable[[Claim], float],
        sent: Callable[[int], None],
        release_later: Callable[[list[tuple[int, str]], float], None],
    ) -> None:
        self.ctx = ctx
        self.handle = handle
        self.throttle = throttle
        self.outcomes = outcomes
        self.name = handle.name
        self.retry = handle.dest.config.retry
        self.deadline = deadline  # the attempt's deadline (monotonic) of a claim
        self.sent = sent  # the call is answered: its slot is free
        self.release_later = release_later

    async def deliver(self, claim: Claim) -> None:
        started = self.ctx.clock()
        t0 = time.perf_counter()
        try:
            outcome = await self._attempt(claim, started, t0)
        except Deferred as deferred:
            # Nothing was sent: paused (a 429), or too little time left before the
            # lease ends. Sleeping here instead could outlast the lease and let
            # another worker send it too.
            self.release_later([(claim.delivery_id, claim.lease_token)], deferred.due)
            return
        finally:
            self.sent(claim.delivery_id)
        await self.finish(claim, outcome)

    async def deliver_batch(self, key: int, claims: list[Claim]) -> None:
        """Several claimed deliveries, one API call: each lead its own outcome."""
        started = self.ctx.clock()
        t0 = time.perf_counter()
        outcomes: list[tuple[Claim, Outcome]] = []
        ready: list[Ready] = []
        try:
            for claim in claims:
                prepared = self.outcomes.prepare(claim, started, t0)
                if isinstance(prepared, Outcome):  # skipped, or dead (mapping, payload)
                    outcomes.append((claim, prepared))
                else:
                    ready.append((claim, *prepared))
            if len(ready) == 1:
                claim = ready[0][0]
                outcomes.append((claim, await self._attempt_one(*ready[0], started, t0)))
            elif ready:
                outcomes.extend(await self._attempt_batch(ready, started, t0))
        except Deferred as deferred:
            # Nothing was sent (paused, or too little time left): leases back.
            self.release_later(
                [(claim.delivery_id, claim.lease_token) for claim, _, _ in ready], deferred.due
            )
        finally:
            self.sent(key)
        if outcomes:
            await asyncio.gather(*(self.finish(claim, outcome) for claim, outcome in outcomes))

    async def finish(self, claim: Claim, outcome: Outcome) -> None:
        """Commit one lead's outcome (fenced by its lease), count and log it."""
        ctx = self.ctx
        try:
            applied = await ctx.finisher.submit(outcome)
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
        ctx.metrics.delivery(self.name, outcome.attempt_outcome)
        ctx.metrics.attempt_latency(self.name, outcome.duration)
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
                round(outcome.next_attempt_at - ctx.clock(), 1) if outcome.next_attempt_at else None
            ),
        )

    async def _attempt(self, claim: Claim, started: float, t0: float) -> Outcome:
        prepared = self.outcomes.prepare(claim, started, t0)
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
            result = await self._call(
                lambda connector: connector.send(record, context), self.deadline(claim)
            )
        except Deferred:
            raise
        except Exception as exc:
            return self.outcomes.failed(claim, started, t0, exc)
        return self.outcomes.delivered(claim, started, t0, result)

    async def _attempt_batch(
        self, ready: list[Ready], started: float, t0: float
    ) -> list[tuple[Claim, Outcome]]:
        deadline = min(self.deadline(claim) for claim, _, _ in ready)
        items = [(record, context) for _, record, context in ready]

        async def call(connector: Connector) -> list[DeliveryResult | DeliveryError]:
            results = await connector.send_batch(items)
            if len(results) != len(items):
                raise RetryableError(
                    f"the connector answered {len(results)} results for {len(items)} leads"
                )
            return results

        outcomes = self.outcomes
        try:
            results = await self._call(call, deadline)
        except Deferred:
            raise
        except Exception as exc:
            # The whole call failed: for each lead as if its own send had failed.
            return [(claim, outcomes.failed(claim, started, t0, exc)) for claim, _, _ in ready]
        out = []
        for (claim, _, _), result in zip(ready, results, strict=True):
            if isinstance(result, DeliveryResult):
                out.append((claim, outcomes.delivered(claim, started, t0, result)))
            else:
                out.append((claim, outcomes.failed(claim, started, t0, result)))
        return out

    async def _call(self, op: Callable[[Connector], Awaitable[T]], deadline: float) -> T:
        """One API call (a send or a batch): gates, rate token, timeout, connection
        retries and one re-authentication; then the API budget guard looks at it."""
        monotonic = self.ctx.monotonic
        timeout = self.retry.timeout
        throttle = self.throttle

        def limit() -> float:
            # Each step gets retry.timeout, and never more than the deadline leaves.
            return max(0.0, min(timeout, deadline - monotonic()))

        throttle.gate(deadline, need=timeout)
        connector = await self.handle.ensure_started(limit())
        await throttle.admit(deadline, timeout)
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for wraps each call
            # in one more task.
            async with asyncio.timeout(limit()):
                result = await self._once(op, connector, deadline)
            throttle.observe_budget(connector)
            return result
        except AuthError as first:
            if not self.handle.started:
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
                raise AuthError(f"re-authentication failed: {safe_error(exc)}") from exc
            async with asyncio.timeout(limit()):
                result = await self._once(op, connector, deadline)
            throttle.observe_budget(connector)
            return result

    async def _once(
        self, op: Callable[[Connector], Awaitable[T]], connector: Connector, deadline: float
    ) -> T:
        """The call, and a few quick retries if it never reached the remote application."""
        retries = self.retry.connect_retries
        pace = self.retry.connect_retry_wait
        self.throttle.gate(deadline, need=0.0)
        try:
            return await op(connector)
        except Exception as exc:
            self.throttle.observe_budget(connector)
            if retries == 0 or not _is_connection_error(exc):
                raise
        # tenacity only on this rare path: set up per send, it was a measurable
        # share of the event loop at a few thousand deliveries a second. Waits
        # are pace, 2*pace, 4*pace... capped at 4 s, counting the try above.
        await self.ctx.sleep(min(pace, 4))
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_is_connection_error),
            stop=stop_after_attempt(retries),
            wait=wait_exponential(multiplier=pace * 2, max=4),
            sleep=self.ctx.sleep,
            reraise=True,
        ):
            with attempt:
                self.throttle.gate(deadline, need=0.0)
                return await op(connector)
        raise AssertionError("unreachable")  # pragma: no cover
