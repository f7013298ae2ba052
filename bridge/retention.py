"""Retention: forget what is no longer needed, in bounded transactions.

* Payloads: once every destination has a lead, its payload is purged after
  ``retention.payload_days``. The lead row (and its id) stays, so a late retry
  of the same webhook from the provider is still recognised as a duplicate and
  not delivered twice.
* Quarantine: refused bodies and elements go after ``retention.quarantine_days``,
  and the oldest go first beyond ``quarantine_max_rows`` rows or
  ``quarantine_max_bytes`` bytes, ``CHUNK`` rows per transaction with a pause
  between them (:func:`~bridge.store.base.in_bounded_transactions`), so
  intake's commits never wait long behind a large drop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from bridge.config import RetentionConfig
from bridge.errors import StoreError
from bridge.logs import event
from bridge.metrics import Metrics
from bridge.store.base import Store, in_bounded_transactions

log = logging.getLogger("lead_bridge.retention")

DAY = 86400.0
# Quarantine rows deleted per transaction.
CHUNK = 500


async def purge_once(store: Store, payload_days: int, *, now: float) -> int:
    """Purge the payloads of finished leads received more than ``payload_days`` ago."""
    before = now - payload_days * DAY
    purged = await store.purge_payloads(before)
    event(log, "retention_purge", purged=purged, payload_days=payload_days)
    return purged


async def _drop_chunks(
    store: Store, *, before: float | None = None, upto_id: int | None = None, chunk: int
) -> int:
    async def part(cursor: object) -> tuple[int, bool | None]:
        count = await store.drop_quarantine(before=before, upto_id=upto_id, limit=chunk)
        return count, (True if count == chunk else None)  # a full chunk: maybe more

    return sum(await in_bounded_transactions(part))


async def trim_quarantine(
    store: Store,
    cfg: RetentionConfig,
    *,
    now: float,
    metrics: Metrics | None = None,
    chunk: int = CHUNK,
) -> dict[str, int]:
    """Drop quarantine rows past ``quarantine_days``, then the oldest beyond the
    caps. Returns the rows dropped per reason (``age``, ``cap``)."""
    dropped = {"age": 0, "cap": 0}
    if cfg.quarantine_days is not None:
        before = now - cfg.quarantine_days * DAY
        dropped["age"] = await _drop_chunks(store, before=before, chunk=chunk)
    cutoff = await store.quarantine_cutoff(
        max_rows=cfg.quarantine_max_rows, max_bytes=cfg.quarantine_max_bytes
    )
    if cutoff is not None:
        dropped["cap"] = await _drop_chunks(store, upto_id=cutoff, chunk=chunk)
    for reason, count in dropped.items():
        if count and metrics is not None:
            metrics.quarantine_dropped_total.labels(reason).inc(count)
    if any(dropped.values()):
        event(
            log,
            "quarantine_dropped",
            by_age=dropped["age"],
            by_cap=dropped["cap"],
            quarantine_days=cfg.quarantine_days,
            max_rows=cfg.quarantine_max_rows,
            max_bytes=cfg.quarantine_max_bytes,
        )
    return dropped


async def retention_once(
    store: Store, cfg: RetentionConfig, *, now: float, metrics: Metrics | None = None
) -> None:
    if cfg.payload_days is not None:
        await purge_once(store, cfg.payload_days, now=now)
    await trim_quarantine(store, cfg, now=now, metrics=metrics)


async def retention_task(
    store: Store,
    cfg: RetentionConfig,
    *,
    metrics: Metrics | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Run retention now, then every ``cfg.interval`` seconds, until cancelled.

    A store failure is logged and retried at the next interval: retention is
    housekeeping and must never take the service down.
    """
    if not cfg.enabled:
        return
    while True:
        try:
            await retention_once(store, cfg, now=clock(), metrics=metrics)
        except StoreError as exc:
            event(log, "retention_failed", logging.WARNING, error=type(exc).__name__)
        await sleep(cfg.interval)
