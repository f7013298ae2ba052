"""The values intake, the store and the delivery engine pass to each other.

Plain data, no behaviour beyond small helpers: intake builds ``LeadIn`` and
``QuarantineIn`` (:mod:`bridge.leads`), every store backend takes and returns
these types (:mod:`bridge.store.base` is the interface that speaks them), and
the engine and operator views read the records. Nothing here imports another
module of Lead Bridge, so any module can import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

DeliveryStatus = Literal["pending", "delivered", "dead", "skipped"]
AttemptOutcome = Literal["delivered", "retry", "rate_limited", "dead", "skipped"]
STATUSES: tuple[DeliveryStatus, ...] = ("pending", "delivered", "dead", "skipped")


class LeadIn(NamedTuple):
    """A validated lead ready to store. ``payload`` is its JSON text, verbatim keys.

    (A named tuple: built once per lead on intake's hot path, where a frozen
    dataclass's __init__ costs several times more.)"""

    id: str
    payload: str
    created: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class QuarantineIn:
    """Something received but not accepted, kept for inspection."""

    reason: str
    raw: str
    lead_id: str | None = None
    item_index: int | None = None


@dataclass
class IngestResult:
    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Claim:
    """A leased delivery handed to a worker."""

    delivery_id: int
    lead_id: str
    destination: str
    attempts: int  # attempts already made before this one
    created_at: float  # when the delivery row was created (for max_age)
    lease_token: str
    payload: str | None  # the lead's JSON; None if purged or erased
    received_at: float


@dataclass(frozen=True)
class Outcome:
    """The result of one attempt, applied by :meth:`Store.finish` (fenced)."""

    delivery_id: int
    lease_token: str
    status: DeliveryStatus
    attempt_outcome: AttemptOutcome
    started_at: float
    duration: float
    next_attempt_at: float | None = None  # required when status == "pending"
    error: str | None = None
    status_code: int | None = None
    remote_id: str | None = None
    # False for outcomes that did not consume an attempt (e.g. a re-authentication retry
    # that is recorded but should not count against the schedule).
    count_attempt: bool = True


@dataclass(frozen=True)
class LeadRecord:
    id: str
    received_at: float
    created: str | None
    url: str | None
    payload: str | None


@dataclass(frozen=True)
class DeliveryRecord:
    id: int
    lead_id: str
    destination: str
    status: DeliveryStatus
    attempts: int
    created_at: float
    next_attempt_at: float | None
    leased: bool
    last_error: str | None
    last_status_code: int | None
    remote_id: str | None
    delivered_at: float | None
    updated_at: float


@dataclass(frozen=True)
class AttemptRecord:
    delivery_id: int
    lead_id: str
    destination: str
    number: int
    started_at: float
    duration: float
    outcome: str
    error: str | None
    status_code: int | None
    remote_id: str | None


@dataclass(frozen=True)
class DestinationStatus:
    destination: str
    counts: dict[str, int]  # status -> count (pending, delivered, dead, skipped)
    in_flight: int  # pending rows currently leased
    oldest_pending_at: float | None  # created_at of the oldest pending delivery


@dataclass(frozen=True)
class StoreStatus:
    leads: int
    quarantined: int
    undelivered: int  # leads with no delivery row at all (no destinations configured)
    unrouted: int  # leads whose every delivery was skipped by `when:`
    destinations: list[DestinationStatus]


@dataclass(frozen=True)
class ReplayFilter:
    """Which deliveries a replay makes due again (see :meth:`Store.replay`)."""

    lead_id: str | None = None
    destination: str | None = None
    dead_only: bool = False
    force: bool = False  # delivered ones too


@dataclass
class ReplayResult:
    requeued: int = 0
    refused_delivered: int = 0  # delivered rows not requeued without force
    not_found: int = 0


@dataclass
class EraseReport:
    leads: int = 0
    deliveries: int = 0
    attempts: int = 0
    quarantine: int = 0
    errors_scrubbed: int = 0  # other leads' delivery errors that quoted the address
    lead_ids: list[str] = field(default_factory=list)
    # False: erased, but the old bytes may still be in a file (SQLite's WAL) until
    # the next checkpoint; running the erasure again retries it.
    files_clean: bool = True

    def add(self, other: EraseReport) -> None:
        self.leads += other.leads
        self.deliveries += other.deliveries
        self.attempts += other.attempts
        self.quarantine += other.quarantine
        self.errors_scrubbed += other.errors_scrubbed
        self.lead_ids += other.lead_ids

    def as_dict(self) -> dict[str, Any]:
        return {
            "leads": self.leads,
            "deliveries": self.deliveries,
            "attempts": self.attempts,
            "quarantine": self.quarantine,
            "errors_scrubbed": self.errors_scrubbed,
            "lead_ids": self.lead_ids,
        }
