"""One lead's timeline: as received (personal fields masked until revealed),
the record mapped for each destination (the mapping playground's code), every
delivery and every attempt with time, duration, outcome, status code, error."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from bridge.destinations import Runtime
from bridge.logs import mask_email, mask_phone, redact
from bridge.operations.mapping import evaluate_destination
from bridge.operations.search import TEST_PREFIX
from bridge.store.base import AttemptRecord, DeliveryRecord, LeadRecord, Store

# data keys shown masked until the operator reveals them.
PERSONAL_KEYS = frozenset({"first_name", "middle_name", "last_name", "name", "email", "phone"})


@dataclass(frozen=True)
class Timeline:
    lead: LeadRecord
    payload: Any  # the lead as received (parsed); None once purged
    test: bool
    deliveries: list[DeliveryRecord]
    attempts: list[AttemptRecord]  # oldest first
    mapped: list[dict[str, Any]]  # per destination, as evaluate_destination()


def mask_lead(payload: Any) -> Any:
    """A copy of a lead with its personal fields masked (``j***@example.com``,
    ``***67``, ``J***``) and any other email-looking text masked too."""

    def walk(node: Any, key: str | None) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, key) for v in node]
        if not isinstance(node, str | int) or isinstance(node, bool):
            return node
        text = str(node)
        if key == "email":
            return mask_email(text)
        if key == "phone":
            return mask_phone(text)
        if key in PERSONAL_KEYS:
            return f"{text[:1]}***" if text else text
        return redact(text) if isinstance(node, str) else node

    return walk(payload, None)


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
