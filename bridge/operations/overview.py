"""Per-destination health for the overview page, ``lead-bridge overview`` and
``GET /admin/overview``: counts by state, oldest pending age, last error (no
personal data), deliveries per hour over the last 24 h, pause and worker
state; unrouted leads; schema drift."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from bridge.destinations import Runtime
from bridge.logs import redact
from bridge.operations.drift import DriftKey, drift_keys
from bridge.operations.search import TEST_PREFIX
from bridge.store.base import Store

if TYPE_CHECKING:
    from bridge.engine import Engine
    from bridge.metrics import Metrics

HOURS = 24


class EngineView(Protocol):
    """What the overview reads of the delivery engine in this process."""

    def paused_until(self, destination: str) -> float | None:
        """Wall-clock time until which the destination sends nothing (a 429), or None."""

    def worker_running(self, destination: str) -> bool | None:
        """Whether its delivery loop runs here; None when this process runs no workers."""


class LocalEngineView:
    """The engine of this process (``state.engine``): its
    :meth:`~bridge.engine.Engine.destination_states`. With no engine here
    (``worker.enabled: false``, workers in ``lead-bridge worker``), the pause
    comes from this process's metrics if any and the worker state is unknown."""

    def __init__(self, engine: Engine | None, metrics: Metrics | None) -> None:
        self.engine = engine
        self.metrics = metrics
        self._states = engine.destination_states() if engine is not None else {}

    def paused_until(self, destination: str) -> float | None:
        state = self._states.get(destination)
        if state is not None:
            until = state.get("paused_until")
            return float(until) if until is not None else None
        if self.metrics is not None:
            return self.metrics.pauses.until.get(destination) or None
        return None

    def pause_reason(self, destination: str) -> str | None:
        reason = (self._states.get(destination) or {}).get("pause_reason")
        return str(reason) if reason is not None else None

    def worker_running(self, destination: str) -> bool | None:
        if self.engine is None:
            return None
        # False while a crashed loop waits for its restart (the task lives on).
        return self.engine.worker_running(destination)


@dataclass(frozen=True)
class DestinationOverview:
    name: str
    type: str | None
    configured: bool
    enabled: bool
    delivered: int
    pending: int  # due or waiting, never attempted
    retrying: int  # pending after at least one failed attempt
    dead: int
    skipped: int
    in_flight: int
    oldest_pending_age: float | None  # seconds
    last_error: str | None  # masked: no email, no secret
    last_error_at: float | None
    per_hour: list[int]  # deliveries in each of the last 24 hours, oldest first
    rate_per_second: float | None  # configured rate limit
    paused_until: float | None  # rate-limited (429) or over the API budget until then
    worker_running: bool | None
    pause_reason: str | None = None  # the engine's reason while paused


@dataclass(frozen=True)
class Overview:
    generated_at: float
    leads: int  # real leads (test leads are never stored)
    quarantined: int
    unrouted: int  # leads whose every delivery was skipped by `when:`
    undelivered: int  # leads with no delivery row (stored while no destination was set)
    destinations: list[DestinationOverview]
    drift: list[DriftKey] = field(default_factory=list)


# Lead ids whose every delivery was skipped: from the skipped rows (a partial
# index), each checked for a sibling that was not skipped.
_UNROUTED = (
    "SELECT d.lead_id FROM deliveries d WHERE d.status = 'skipped' AND NOT EXISTS "
    "(SELECT 1 FROM deliveries o WHERE o.lead_id = d.lead_id AND o.status <> 'skipped')"
)


_PER_HOUR = ", ".join(
    [
        "(SELECT count(*) FROM deliveries WHERE status = 'delivered' AND destination = ? "
        "AND delivered_at >= ? AND delivered_at < ?)"
    ]
    * HOURS
)
# The newest failed attempt still pending: SQLite returns the other columns of
# the row holding max() in one pass over the pending rows; PostgreSQL sorts.
_LAST_RETRY = (
    "SELECT last_error, max(updated_at) FROM deliveries WHERE status = 'pending' "
    "AND destination = ? AND attempts > 0",
    "SELECT last_error, updated_at FROM deliveries WHERE status = 'pending' "
    "AND destination = ? AND attempts > 0 ORDER BY updated_at DESC LIMIT 1",
)
# Destinations with stored deliveries, in any status: a skip scan of each
# status's partial index (a few index seeks per destination, not a table scan).
_STORED_DESTINATIONS = " UNION ".join(
    f"SELECT name FROM (WITH RECURSIVE n{i}(name) AS ("  # noqa: S608 - constants
    f"SELECT min(destination) FROM deliveries WHERE status = '{status}' UNION ALL "
    f"SELECT (SELECT min(destination) FROM deliveries WHERE status = '{status}' "
    f"AND destination > n{i}.name) FROM n{i} WHERE n{i}.name IS NOT NULL) "
    f"SELECT name FROM n{i} WHERE name IS NOT NULL) AS s{i}"
    for i, status in enumerate(("pending", "dead", "delivered", "skipped"))
)


async def _destination(
    store: Store, runtime: Runtime, engine: EngineView, name: str, now: float
) -> DestinationOverview:
    # Each count through its status's partial index (never a scan of the table).
    ((delivered, dead, skipped),) = await store.fetch(
        "SELECT (SELECT count(*) FROM deliveries WHERE status = 'delivered' AND destination = ?), "
        "(SELECT count(*) FROM deliveries WHERE status = 'dead' AND destination = ?), "
        "(SELECT count(*) FROM deliveries WHERE status = 'skipped' AND destination = ?)",
        [name, name, name],
    )
    ((pending, retrying, in_flight, oldest),) = await store.fetch(
        "SELECT count(*), count(*) FILTER (WHERE attempts > 0), "
        "count(*) FILTER (WHERE lease_token IS NOT NULL AND next_attempt_at > ?), "
        "min(created_at) FROM deliveries WHERE status = 'pending' AND destination = ?",
        [now, name],
    )
    # The latest error: the newest dead letter (partial index) or pending retry.
    errors = await store.fetch(
        "SELECT last_error, updated_at FROM deliveries WHERE status = 'dead' "
        "AND destination = ? ORDER BY updated_at DESC LIMIT 1",
        [name],
    ) + await store.fetch(_LAST_RETRY[store.dialect == "postgresql"], [name])
    errors = [e for e in errors if e[0]]
    last = max(errors, key=lambda e: e[1]) if errors else None
    # One count per hour, each a range of the delivered index (no sort).
    start = now - HOURS * 3600
    bounds: list[Any] = []
    for hour in range(HOURS):
        bounds += [name, start + hour * 3600, start + (hour + 1) * 3600]
    (per_hour_row,) = await store.fetch(f"SELECT {_PER_HOUR}", bounds)
    per_hour = [int(c) for c in per_hour_row]
    dest = runtime.destination(name)
    paused = engine.paused_until(name)
    return DestinationOverview(
        name=name,
        type=dest.config.type if dest else None,
        configured=dest is not None,
        enabled=bool(dest and dest.config.enabled),
        delivered=int(delivered),
        pending=int(pending) - int(retrying),
        retrying=int(retrying),
        dead=int(dead),
        skipped=int(skipped),
        in_flight=int(in_flight),
        oldest_pending_age=round(now - oldest, 3) if oldest is not None else None,
        last_error=redact(str(last[0])) if last else None,
        last_error_at=float(last[1]) if last else None,
        per_hour=per_hour,
        rate_per_second=dest.rate_per_second if dest else None,
        paused_until=paused if paused is not None and paused > now else None,
        worker_running=engine.worker_running(name) if dest and dest.config.enabled else None,
        pause_reason=(
            engine.pause_reason(name)
            if isinstance(engine, LocalEngineView) and paused is not None and paused > now
            else None
        ),
    )


async def overview(
    store: Store, runtime: Runtime, engine: EngineView | None = None, *, now: float | None = None
) -> Overview:
    """Everything the overview page shows, for configured destinations and any
    other destination that still has deliveries in the store."""
    current = time.time() if now is None else now
    view: EngineView = engine or LocalEngineView(None, None)
    stored = [str(r[0]) for r in await store.fetch(_STORED_DESTINATIONS)]
    names = sorted(set(stored) | {d.name for d in runtime.destinations})
    dests = [await _destination(store, runtime, view, n, current) for n in names]
    ((leads,),) = await store.fetch("SELECT count(*) FROM leads")
    ((quarantined,),) = await store.fetch("SELECT count(*) FROM quarantine")
    ((unrouted,),) = await store.fetch(f"SELECT count(DISTINCT lead_id) FROM ({_UNROUTED}) AS u")  # noqa: S608
    # Leads without any delivery: none when one destination has a delivery for
    # every lead (the usual case, known from the counts above); otherwise counted.
    per_destination = [d.delivered + d.pending + d.retrying + d.dead + d.skipped for d in dests]
    if max(per_destination, default=0) >= int(leads):
        undelivered = 0
    else:
        ((undelivered,),) = await store.fetch(
            "SELECT count(*) FROM leads l WHERE NOT EXISTS "
            "(SELECT 1 FROM deliveries d WHERE d.lead_id = l.id)"
        )
    return Overview(
        current,
        int(leads),
        int(quarantined),
        int(unrouted),
        int(undelivered),
        dests,
        await drift_keys(store, runtime),
    )


async def unrouted_leads(store: Store, *, limit: int = 50) -> list[tuple[str, float]]:
    """(lead id, received at) of the newest leads no destination's `when:` took."""
    rows: list[Any] = await store.fetch(
        f"SELECT l.id, l.received_at FROM leads l WHERE l.id IN ({_UNROUTED}) "  # noqa: S608
        "ORDER BY l.received_at DESC LIMIT ?",
        [limit],
    )
    return [(str(i), float(t)) for i, t in rows if not str(i).startswith(TEST_PREFIX)]
