"""Prometheus metrics. One ``Metrics`` per app, on its own registry (tests build many).

Labels carry only destination names, outcomes and provider key names — never
lead data.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from bridge.store.base import StoreStatus

# Provider key names become label values; cap them so a misbehaving sender
# cannot blow up the number of series.
MAX_UNMAPPED_KEYS = 200


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests_total = Counter(
            "lead_bridge_webhook_requests_total",
            "Webhook requests by outcome",
            ["outcome"],
            registry=r,
        )
        self.leads_total = Counter(
            "lead_bridge_leads_total",
            "Leads seen by intake: received, accepted, duplicate, rejected",
            ["result"],
            registry=r,
        )
        self.probes_total = Counter(
            "lead_bridge_probes_total", "Empty webhook arrays (provider probes)", registry=r
        )
        self.deliveries_total = Counter(
            "lead_bridge_deliveries_total",
            "Delivery attempts by destination and outcome",
            ["destination", "outcome"],
            registry=r,
        )
        self.attempt_seconds = Histogram(
            "lead_bridge_attempt_duration_seconds",
            "Duration of one delivery attempt",
            ["destination"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.queue_depth = Gauge(
            "lead_bridge_queue_depth",
            "Deliveries by destination and status",
            ["destination", "status"],
            registry=r,
        )
        self.oldest_pending = Gauge(
            "lead_bridge_oldest_pending_age_seconds",
            "Age of the oldest pending delivery per destination",
            ["destination"],
            registry=r,
        )
        self.dead_letters = Gauge(
            "lead_bridge_dead_letters",
            "Dead deliveries per destination",
            ["destination"],
            registry=r,
        )
        self.unmapped_total = Counter(
            "lead_bridge_unmapped_keys_total",
            "data keys that no mapping rule read, per destination and key (schema drift)",
            ["destination", "key"],
            registry=r,
        )
        self._unmapped_seen: set[str] = set()
        self._request_children: dict[str, Any] = {}
        self._lead_children = {
            name: self.leads_total.labels(name)
            for name in ("received", "accepted", "duplicate", "rejected")
        }

    def request(self, outcome: str) -> None:
        # Resolving label children costs more than the increment: cache them (hot path).
        child = self._request_children.get(outcome)
        if child is None:
            child = self._request_children[outcome] = self.requests_total.labels(outcome)
        child.inc()

    def leads(
        self, *, received: int = 0, accepted: int = 0, duplicates: int = 0, rejected: int = 0
    ) -> None:
        children = self._lead_children
        if received:
            children["received"].inc(received)
        if accepted:
            children["accepted"].inc(accepted)
        if duplicates:
            children["duplicate"].inc(duplicates)
        if rejected:
            children["rejected"].inc(rejected)

    def probe(self) -> None:
        self.probes_total.inc()

    def delivery(self, destination: str, outcome: str) -> None:
        self.deliveries_total.labels(destination, outcome).inc()

    def attempt_latency(self, destination: str, seconds: float) -> None:
        self.attempt_seconds.labels(destination).observe(seconds)

    def unmapped(self, destination: str, keys: Iterable[str]) -> None:
        for key in keys:
            if key not in self._unmapped_seen:
                if len(self._unmapped_seen) >= MAX_UNMAPPED_KEYS:
                    key = "_other"
                else:
                    self._unmapped_seen.add(key)
            self.unmapped_total.labels(destination, key).inc()

    def update_queue(self, status: StoreStatus, now: float) -> None:
        for dest in status.destinations:
            for state, count in dest.counts.items():
                self.queue_depth.labels(dest.destination, state).set(count)
            self.dead_letters.labels(dest.destination).set(dest.counts.get("dead", 0))
            age = now - dest.oldest_pending_at if dest.oldest_pending_at is not None else 0.0
            self.oldest_pending.labels(dest.destination).set(max(0.0, age))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
