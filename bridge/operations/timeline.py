"""One lead's timeline: as received (personal fields masked until revealed),
the record mapped for each destination (the mapping playground's code), every
delivery and every attempt with time, duration, outcome, status code, error."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bridge.destinations import Runtime
from bridge.operations.mapping import evaluate_destination
from bridge.operations.search import TEST_PREFIX
from bridge.store.base import AttemptRecord, DeliveryRecord, LeadRecord, Store


@dataclass(frozen=True)
class Timeline:
    lead: LeadRecord
    payload: Any  # the lead as received (parsed); None once purged
    test: bool
    deliveries: list[DeliveryRecord]
    attempts: list[AttemptRecord]  # oldest first
    mapped: list[dict[str, Any]]  # per destination, as evaluate_destination()


async def lead_timeline(store: Store, runtime: Runtime, lead_id: str) -> Timeline | None:
    """The lead, or None when no lead has this id."""
    record = await store.get_lead(lead_id)
    if record is None:
        return None
    payload = json.loads(record.payload) if record.payload is not None else None
    mapped = (
        [evaluate_destination(d, payload) for d in runtime.destinations]
        if isinstance(payload, dict)
        else []
    )
    return Timeline(
        record,
        payload,
        lead_id.startswith(TEST_PREFIX),
        await store.get_deliveries(lead_id),
        await store.get_attempts(lead_id),
        mapped,
    )
