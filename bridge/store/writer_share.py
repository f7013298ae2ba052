"""Intake first, delivery its share: how the SQLite store schedules the delivery
engine's writes (claims, outcomes, releases) beside intake's on its one writer.

In `lead-bridge serve` a webhook's 200 waits for its commit, and that commit
waits for whatever the writer and the event loop are doing: with the engine
draining a backlog at full speed, intake's latency grows several times over.
Starving delivery is no answer either: under sustained intake the backlog would
only drain once the load stops. So, while intake is active (it wrote within
``window`` seconds):

- at most ``in_flight`` delivery writes are at the writer at a time, and they
  leave at least ``spacing`` apart, so delivery work reaches the writer in few,
  full transactions rather than one per lead (the writer commits intake's
  requests first and apart, see :mod:`bridge.store.sqlite_writer`, so a webhook
  waits behind one delivery transaction at most);
- between delivery writes there is a gap, adapted to what delivery costs
  intake (AIMD, as TCP does with congestion): it grows while intake's round
  trips that met a delivery write run above ``slowdown`` times those that did
  not, and shrinks while they do not;
- the gap is skipped while delivery has credit: every lead intake writes earns
  delivery ``floor / (1 - floor)`` of a lead, and every outcome finished spends
  one, so delivery keeps at least ``floor`` of the leads written, however busy
  intake is.

Without intake (`lead-bridge worker`, or a quiet `serve`) delivery writes are
not limited at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

# Ops of the delivery engine, scheduled here; intake's are timed.
DELIVERY_OPS = frozenset({"claim", "finish", "release"})
INTAKE_OPS = frozenset({"ingest", "ingest_body"})


class WriterShare:
    def __init__(
        self,
        *,
        window: float = 2.0,
        floor: float = 0.5,
        slowdown: float = 2.0,
        in_flight: int = 2,
        spacing: float = 0.02,
        max_gap: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.earn = floor / (1 - floor)  # delivery's credit per lead intake writes
        self.slowdown = slowdown
        self.spacing = spacing  # between delivery writes at least, while intake is active
        self.max_gap = max_gap
        self.clock = clock
        self.gap = 0.0  # seconds between delivery writes while intake is active
        self.credit = 0.0  # leads delivery may finish regardless of the gap
        self.max_credit = 512.0
        self._intake_at = -float("inf")
        # Intake's round trips, smoothed: of writes that met no delivery write at the
        # writer, and of those that did (the difference is what delivery costs intake).
        self._alone: float | None = None
        self._beside: float | None = None
        self._delivering = 0  # delivery writes at the writer
        self._admissions = 0
        self._next_at = 0.0
        self._admitted_at = -float("inf")
        self._slots = asyncio.Semaphore(in_flight)
        self._credited = asyncio.Event()

    def intake_active(self) -> bool:
        return self.clock() - self._intake_at <= self.window

    def intake_started(self) -> tuple[int, bool]:
        """An intake write goes to the writer: the token for :meth:`intake_done`."""
        return self._admissions, self._delivering > 0

    def intake_done(self, token: tuple[int, bool], round_trip: float, leads: int) -> None:
        """An intake write of ``leads`` leads was answered ``round_trip`` seconds
        after it was queued."""
        if not self.intake_active():  # a new spell of intake
            self.gap, self.credit = 0.0, 0.0
        self._intake_at = self.clock()
        admissions, delivering = token
        if delivering or self._delivering or admissions != self._admissions:
            self._beside = _smooth(self._beside, round_trip)
        else:
            self._alone = _smooth(self._alone, round_trip)
        self.credit = min(self.credit + self.earn * leads, self.max_credit)
        if self.credit > 0:
            self._credited.set()

    def finished(self, outcomes: int) -> None:
        """Delivery wrote ``outcomes`` outcomes: spent from its credit."""
        if self.intake_active():
            self.credit -= outcomes
            if self.credit <= 0:
                self._credited.clear()

    @contextlib.asynccontextmanager
    async def delivery(self) -> AsyncIterator[None]:
        """Hold a delivery write until it may go to the writer (while intake is active)."""
        if not self.intake_active():
            yield
            return
        async with self._slots:
            await self._admit()
            self._admissions += 1
            self._delivering += 1
            try:
                yield
            finally:
                self._delivering -= 1
                self._adapt()
                self._next_at = self.clock() + self.gap

    async def _admit(self) -> None:
        wait = self._admitted_at + self.spacing - self.clock()
        if wait > 0:
            await asyncio.sleep(wait)
        self._admitted_at = self.clock()
        while self.intake_active() and self.credit <= 0:
            wait = self._next_at - self.clock()
            if wait <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._credited.wait(), wait)

    def _adapt(self) -> None:
        alone, beside = self._alone, self._beside
        if alone is not None and beside is not None and beside > self.slowdown * alone:
            self.gap = min(max(2 * self.gap, 0.001), self.max_gap)
        else:
            self.gap = max(0.0, self.gap * 0.8 - 0.0005)


def _smooth(average: float | None, sample: float) -> float:
    return sample if average is None else average + 0.2 * (sample - average)
