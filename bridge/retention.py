"""Payload retention: forget what a lead said once every destination has it.

The lead row (and its id) stays, so a late retry of the same webhook from the
provider is still recognised as a duplicate and not delivered twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from bridge.config import RetentionConfig
from bridge.errors import StoreError
from bridge.logs import event
from bridge.store.base import Store

log = logging.getLogger("lead_bridge.retention")

DAY = 86400.0


async def purge_once(store: Store, payload_days: int, *, now: float) -> int:
    """Purge the payloads of finished leads received more than ``payload_days`` ago."""
    before = now - payload_days * DAY
    purged = await store.purge_payloads(before)
    event(log, "retention_purge", purged=purged, payload_days=payload_days)
    return purged


async def retention_task(
    store: Store,
    cfg: RetentionConfig,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Purge now, then every ``cfg.interval`` seconds, until cancelled.

    A store failure is logged and retried at the next interval: retention is
    housekeeping and must never take the service down.
    """
    if cfg.payload_days is None:
        return
    while True:
        try:
            await purge_once(store, cfg.payload_days, now=clock())
        except StoreError as exc:
            event(log, "retention_failed", logging.WARNING, error=type(exc).__name__)
        await sleep(cfg.interval)
