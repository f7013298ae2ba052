"""Schema drift: provider ``data`` keys that no destination's mapping reads.

The engine counts unmapped keys per delivery in memory (``Metrics.drift``,
a dict update per key); :func:`flush_drift` moves the tally into the
``unmapped_keys`` table in one transaction, and :func:`drift_task` does that
every ``DRIFT_FLUSH_SECONDS`` and refreshes the gauge
``lead_bridge_unmapped_provider_keys``. Which keys count as drift is decided
against the *current* configuration: map a key and it leaves the list at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from bridge.destinations import Runtime
from bridge.errors import StoreError
from bridge.logs import event
from bridge.metrics import Metrics
from bridge.store.base import Store

log = logging.getLogger("lead_bridge.operations")

DRIFT_FLUSH_SECONDS = 30.0

_UPSERT = (
    "INSERT INTO unmapped_keys (destination, key, first_seen, last_seen, count) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (destination, key) DO UPDATE SET "
    "last_seen = excluded.last_seen, count = unmapped_keys.count + excluded.count"
)


@dataclass(frozen=True)
class DriftKey:
    key: str
    first_seen: float
    last_seen: float
    count: int  # deliveries that carried the key unread, over all destinations
    destinations: list[str]  # where it was seen unread


async def flush_drift(store: Store, metrics: Metrics) -> int:
    """Write the in-memory tally to the store; returns the entries written.
    On a store error the tally is put back (merged), so nothing is lost."""
    tally, metrics.drift = metrics.drift, {}
    if not tally:
        return 0
    statements = [
        (_UPSERT, [dest, key, first, last, int(count)])
        for (dest, key), (count, first, last) in sorted(tally.items())
    ]
    try:
        await store.execute(statements)
    except StoreError:
        for k, (count, first, last) in tally.items():
            entry = metrics.drift.setdefault(k, [0, first, last])
            entry[0] += count
            entry[1], entry[2] = min(entry[1], first), max(entry[2], last)
        raise
    return len(statements)


async def drift_keys(store: Store, runtime: Runtime) -> list[DriftKey]:
    """Keys seen unread that no enabled destination's mapping reads, most recent first."""
    active = runtime.active
    per_key: dict[str, list[tuple[str, float, float, int]]] = {}
    for dest, key, first, last, count in await store.fetch(
        "SELECT destination, key, first_seen, last_seen, count FROM unmapped_keys"
    ):
        per_key.setdefault(key, []).append((dest, first, last, int(count)))
    out = []
    for key, rows in per_key.items():
        if not active or any(d.mapping.reads(key) for d in active):
            continue
        out.append(
            DriftKey(
                key,
                min(r[1] for r in rows),
                max(r[2] for r in rows),
                sum(r[3] for r in rows),
                sorted(r[0] for r in rows),
            )
        )
    out.sort(key=lambda k: (-k.last_seen, k.key))
    return out


async def refresh_gauge(store: Store, runtime: Runtime, metrics: Metrics) -> int:
    count = len(await drift_keys(store, runtime))
    metrics.unmapped_provider_keys.set(count)
    return count


async def drift_task(
    store: Store, runtime: Runtime, metrics: Metrics, interval: float = DRIFT_FLUSH_SECONDS
) -> None:
    """Flush the tally and refresh the gauge every ``interval`` seconds, until cancelled
    (then a last flush)."""
    try:
        while True:
            try:
                await flush_drift(store, metrics)
                await refresh_gauge(store, runtime, metrics)
            except StoreError as exc:
                event(log, "drift_flush_failed", logging.WARNING, error=str(exc))
            await asyncio.sleep(interval)
    finally:
        with contextlib.suppress(StoreError, asyncio.CancelledError):
            await asyncio.shield(flush_drift(store, metrics))
