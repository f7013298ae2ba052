"""Prometheus metrics. One ``Metrics`` per app, on its own registry (tests build many).

Labels carry only destination names, outcomes and provider key names — never
lead data.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from bridge.store.base import DestinationStatus, StoreStatus

# Provider key names become label values; cap them so a misbehaving sender
# cannot blow up the number of series.
MAX_UNMAPPED_KEYS = 200
# Schema drift entries kept between two flushes to the store, and key length.
MAX_DRIFT_ENTRIES = 1000
MAX_KEY_CHARS = 200


class IntakeCounters(Collector):
    """Intake's counters as plain integers, turned into metrics when scraped.

    Counted once or more per webhook request on the event loop (intake's hot
    path), where a prometheus_client Counter takes a lock per increment.
    """

    def __init__(self) -> None:
        self.requests: Tally[str] = Tally()  # by outcome
        self.leads: Tally[str] = Tally()  # by result
        self.probes = 0

    def collect(self) -> Iterator[CounterMetricFamily]:
        requests = CounterMetricFamily(
            "lead_bridge_webhook_requests", "Webhook requests by outcome", labels=["outcome"]
        )
        for outcome, count in sorted(self.requests.items()):
            requests.add_metric([outcome], count)
        leads = CounterMetricFamily(
            "lead_bridge_leads",
            "Leads seen by intake: received, accepted, duplicate, rejected",
            labels=["result"],
        )
        for result in ("received", "accepted", "duplicate", "rejected"):
            leads.add_metric([result], self.leads[result])
        yield requests
        yield leads
        yield CounterMetricFamily(
            "lead_bridge_probes", "Empty webhook arrays (provider probes)", value=self.probes
        )


class PauseGauge(Collector):
    """Seconds until each destination's rate-limit pause ends, computed when scraped.

    The engine records when a pause ends (a wall-clock time); the remaining time
    is what an alert compares against ("paused for hours by one Retry-After").
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.until: dict[str, float] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "lead_bridge_destination_paused_seconds",
            "Seconds until the destination's rate-limit pause ends (0: not paused)",
            labels=["destination"],
        )
        now = self.clock()
        for destination, until in sorted(self.until.items()):
            family.add_metric([destination], max(0.0, until - now))
        yield family


class Metrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.intake = IntakeCounters()
        r.register(self.intake)
        self.pauses = PauseGauge(clock)
        r.register(self.pauses)
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
        self.drift: dict[tuple[str, str], list[float]] = {}
        self.unmapped_provider_keys = Gauge(
            "lead_bridge_unmapped_provider_keys",
            "Distinct provider data keys that no destination's mapping reads (schema drift)",
            registry=r,
        )
        self.worker_up = Gauge(
            "lead_bridge_worker_up",
            "1 while the destination's delivery loop runs in this process, 0 when it has stopped",
            ["destination"],
            registry=r,
        )
        self.worker_restarts = Counter(
            "lead_bridge_worker_restarts_total",
            "Delivery loops restarted after a crash, per destination",
            ["destination"],
            registry=r,
        )
        self.api_budget_share = Gauge(
            "lead_bridge_api_budget_used_ratio",
            "Share of the CRM's API allowance used, as the CRM last reported it",
            ["destination"],
            registry=r,
        )
        self.api_budget_state = Gauge(
            "lead_bridge_api_budget_state",
            "1 for the destination's API budget state (ok, slow, paused), 0 for the others",
            ["destination", "state"],
            registry=r,
        )
        self.quarantine_dropped_total = Counter(
            "lead_bridge_quarantine_dropped_total",
            "Quarantined bodies and elements dropped by retention: reason age "
            "(retention.quarantine_days) or cap (quarantine_max_rows/_bytes)",
            ["reason"],
            registry=r,
        )
        for reason in ("age", "cap"):
            self.quarantine_dropped_total.labels(reason)

    def request(self, outcome: str) -> None:
        self.intake.requests[outcome] += 1

    def leads(
        self, *, received: int = 0, accepted: int = 0, duplicates: int = 0, rejected: int = 0
    ) -> None:
        leads = self.intake.leads
        leads["received"] += received
        leads["accepted"] += accepted
        leads["duplicate"] += duplicates
        leads["rejected"] += rejected

    def probe(self) -> None:
        self.intake.probes += 1

    def delivery(self, destination: str, outcome: str) -> None:
        self.deliveries_total.labels(destination, outcome).inc()

    def attempt_latency(self, destination: str, seconds: float) -> None:
        self.attempt_seconds.labels(destination).observe(seconds)

    def unmapped(self, destination: str, keys: Iterable[str]) -> None:
        keys = list(keys)
        # Schema drift for the store (bridge/operations/drift.py flushes it):
        # (destination, key) -> [count, first seen, last seen]. Bounded between flushes.
        drift, now = self.drift, time.time()
        for key in keys:
            entry = drift.get((destination, key))
            if entry is not None:
                entry[0] += 1
                entry[2] = now
            elif len(drift) < MAX_DRIFT_ENTRIES and len(key) <= MAX_KEY_CHARS:
                drift[(destination, key)] = [1, now, now]
        for key in keys:
            if key not in self._unmapped_seen:
                if len(self._unmapped_seen) >= MAX_UNMAPPED_KEYS:
                    key = "_other"
                else:
                    self._unmapped_seen.add(key)
            self.unmapped_total.labels(destination, key).inc()

    def paused(self, destination: str, until: float) -> None:
        """The destination sends nothing until ``until`` (wall clock), e.g. after a 429."""
        self.pauses.until[destination] = until

    def api_budget(self, destination: str, share: float, state: str) -> None:
        """The API budget guard's view: used share and state (ok, slow, paused)."""
        self.api_budget_share.labels(destination).set(share)
        for name in ("ok", "slow", "paused"):
            self.api_budget_state.labels(destination, name).set(1 if name == state else 0)

    def worker_running(self, destination: str, up: bool) -> None:
        self.worker_up.labels(destination).set(1 if up else 0)

    def worker_restarted(self, destination: str) -> None:
        self.worker_restarts.labels(destination).inc()

    def workers_down(self) -> list[str]:
        """Destinations whose delivery loop this process reports as not running."""
        return sorted(
            sample.labels["destination"]
            for family in self.worker_up.collect()
            for sample in family.samples
            if sample.value == 0
        )

    def update_queue(self, status: StoreStatus, now: float) -> None:
        self.update_destinations(status.destinations, now)

    def update_destinations(self, destinations: Sequence[DestinationStatus], now: float) -> None:
        for dest in destinations:
            for state, count in dest.counts.items():
                self.queue_depth.labels(dest.destination, state).set(count)
            self.dead_letters.labels(dest.destination).set(dest.counts.get("dead", 0))
            age = now - dest.oldest_pending_at if dest.oldest_pending_at is not None else 0.0
            self.oldest_pending.labels(dest.destination).set(max(0.0, age))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
