"""The engine: one supervised claim loop per enabled destination.

Each worker's loop is supervised: a crash is logged, counted and the loop
restarted with backoff (``lead_bridge_worker_up`` shows it meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from bridge.config import WorkerConfig
from bridge.destinations import Destination
from bridge.engine.context import EngineContext
from bridge.engine.finisher import outcome_finisher
from bridge.engine.worker import DestinationWorker
from bridge.logs import event
from bridge.metrics import Metrics
from bridge.retry import Clock, Sleep
from bridge.store.base import Store

log = logging.getLogger("lead_bridge.engine")

# Backoff between restarts of a crashed worker loop: doubling from the engine's
# restart_backoff up to this.
MAX_RESTART_BACKOFF = 60.0


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
        self.clock = clock
        self.restart_backoff = restart_backoff
        self._stop_event = asyncio.Event()
        self.finisher = outcome_finisher(store)
        self.ctx = EngineContext(
            store=store,
            metrics=metrics,
            worker=worker,
            finisher=self.finisher,
            clock=clock,
            monotonic=monotonic,
            sleep=sleep,
            rng=rng,
        )
        self.workers = [DestinationWorker(self.ctx, d) for d in destinations if d.config.enabled]

    @property
    def stopping(self) -> bool:
        return self.ctx.stopping

    async def start(self) -> None:
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
        return {w.name: _state(w, now) for w in self.workers}

    def wake(self) -> None:
        """New deliveries are due (a replay, say): claim now, not at the next poll."""
        for w in self.workers:
            w.wakeup.set()

    async def stop(self, timeout: float) -> None:
        """Stop claiming, let in-flight attempts finish within ``timeout``, release leases."""
        self.ctx.stopping = True
        self._stop_event.set()
        await asyncio.gather(*(w.stop(timeout) for w in self.workers))
        await self.finisher.close()
        event(log, "engine_stopped")


def _state(w: DestinationWorker, now: float) -> dict[str, Any]:
    throttle = w.throttle
    paused = throttle.paused_until > now
    usage = throttle.budget_usage
    return {
        "paused": paused,
        "paused_until": throttle.paused_until if paused else None,
        "rate_limited_at": throttle.rate_limited_at,
        "worker_running": w.running,
        "worker_restarts": w.restarts,
        "pause_reason": throttle.pause_reason if paused else None,
        "in_flight": len(w.sending),
        "claimed": len(w.inflight) + len(w.queued),
        "batch_size": w.batch,
        "api_budget": (
            {
                "state": throttle.budget_state,
                "used": usage.used,
                "limit": usage.limit,
                "window": usage.window,
                "share": round(usage.share, 4),
            }
            if usage is not None
            else None
        ),
    }
