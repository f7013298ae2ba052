"""Seeding a store through its public interface, as intake and the engine would."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from bridge.store.base import LeadIn, Outcome, Store
from tests.conftest import make_lead

T0 = 1_700_000_000.0


async def add_leads(
    store: Store, leads: Sequence[dict[str, Any]], destinations: Sequence[str], now: float = T0
) -> None:
    await store.ingest(
        [LeadIn(lead["id"], json.dumps(lead)) for lead in leads], destinations, [], now
    )


def lead(lead_id: str, **data: Any) -> dict[str, Any]:
    return make_lead(lead_id, **data)


async def finish_all(
    store: Store,
    destination: str,
    *,
    status: str = "delivered",
    now: float = T0,
    error: str | None = None,
    status_code: int | None = None,
    only: Sequence[str] | None = None,
) -> list[str]:
    """Claim every due delivery of ``destination`` and finish it with ``status``
    (those of lead ids in ``only``; the others are released)."""
    claims = await store.claim(destination=destination, limit=10_000, lease_seconds=60, now=now)
    mine = [c for c in claims if only is None or c.lead_id in only]
    others = [(c.delivery_id, c.lease_token) for c in claims if c not in mine]
    outcome = {"delivered": "delivered", "dead": "dead", "pending": "retry"}[status]
    await store.finish(
        [
            Outcome(
                c.delivery_id,
                c.lease_token,
                status,  # type: ignore[arg-type]
                outcome,  # type: ignore[arg-type]
                now,
                0.05,
                next_attempt_at=now + 60 if status == "pending" else None,
                error=error,
                status_code=status_code,
            )
            for c in mine
        ]
    )
    if others:
        await store.release(others, now)
    return [c.lead_id for c in mine]
