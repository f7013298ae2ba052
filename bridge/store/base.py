"""The store interface: everything Lead Bridge keeps durably goes through here.

Tables (the same on every backend, declared once in ``schema.py``):

* ``leads``       one row per lead id, with the original JSON (``payload``);
* ``deliveries``  the transactional outbox: one row per (lead, destination),
                  created in the same transaction as the lead;
* ``attempts``    one row per delivery attempt (time, duration, outcome, error);
* ``quarantine``  bodies and batch elements that could not be accepted;
* ``erased_leads`` tombstones: ids of erased leads, so a re-send is a duplicate.

Delivery states::

    pending ──claim──> (pending, leased: next_attempt_at = lease expiry, lease_token set)
       ^                    │ finish()
       │ replay             ├──> delivered   (idempotency log: remote_id, status code)
       └────────────────────┼──> pending     (next_attempt_at = backoff)
                            ├──> dead        (dead letter: last_error)
                            └──> skipped     (the destination's `when:` did not match)

A lease is the visibility-timeout trick: a claimed row stays ``pending`` with
``next_attempt_at`` moved to the lease expiry and a fresh ``lease_token``. If the
worker dies, the row becomes due again by itself. ``finish`` is fenced on the
token, so a worker whose lease expired cannot overwrite the new owner's result.

All times are UNIX epoch seconds (float).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from bridge.models import (
    STATUSES,
    AttemptOutcome,
    AttemptRecord,
    Claim,
    DeliveryRecord,
    DeliveryStatus,
    DestinationStatus,
    EraseReport,
    IngestResult,
    LeadIn,
    LeadRecord,
    Outcome,
    QuarantineIn,
    ReplayFilter,
    ReplayResult,
    StoreStatus,
)
from bridge.store.erasure import CHUNK, ErasePart, ErasePlan
from bridge.store.sql_shared import (
    DELIVERY_COLUMNS,
    delivery_from_row,
    outcome_values,
    quarantine_cutoff_query,
    quarantine_drop_condition,
    replay_choice,
    versions_to_apply,
)

if TYPE_CHECKING:
    from bridge.store.search import SearchHasher


# Rows examined per transaction by long operator jobs (replay of dead letters,
# payload purge): a few milliseconds of the writer each, see in_bounded_transactions.
PART_ROWS = 500
# The longest pause between two parts.
PART_PAUSE = 0.1

# The interface; the values it speaks (defined in bridge.models) and what the
# SQL backends share (bridge.store.sql_shared) are importable from here too.
__all__ = [
    "DELIVERY_COLUMNS",
    "PART_PAUSE",
    "PART_ROWS",
    "STATUSES",
    "AttemptOutcome",
    "AttemptRecord",
    "Claim",
    "DeliveryRecord",
    "DeliveryStatus",
    "DestinationStatus",
    "EraseReport",
    "IngestResult",
    "LeadIn",
    "LeadRecord",
    "Outcome",
    "QuarantineIn",
    "ReplayFilter",
    "ReplayResult",
    "Store",
    "StoreStatus",
    "delivery_from_row",
    "in_bounded_transactions",
    "outcome_values",
    "pause_after_part",
    "quarantine_cutoff_query",
    "quarantine_drop_condition",
    "replay_choice",
    "versions_to_apply",
]

T = TypeVar("T")


async def in_bounded_transactions(part: Callable[[Any], Awaitable[tuple[T, Any]]]) -> list[T]:
    """Run a long write as a series of short transactions: ``part(cursor)``
    (one transaction) from cursor None until it returns None as the next
    cursor; the results of all parts.

    Between parts it pauses as long as the part took (at most PART_PAUSE), so
    that other writers get the database in between: intake's commits in the
    same SQLite writer process, and the SQLite writer of a service running
    beside a ``lead-bridge`` command (whose busy handler polls for the lock).
    """
    loop = asyncio.get_running_loop()
    results: list[T] = []
    cursor: Any = None
    while True:
        started = loop.time()
        result, cursor = await part(cursor)
        results.append(result)
        if cursor is None:
            return results
        await pause_after_part(started)


async def pause_after_part(started: float) -> None:
    """The pause between two parts of a long write (see in_bounded_transactions):
    as long as the part that began at ``started`` (the loop's time) took, at
    most PART_PAUSE."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(min(max(0.0, loop.time() - started), PART_PAUSE))


class Store:
    """Abstract store. Every method is a coroutine; backends must be safe to call
    concurrently from one event loop."""

    # "sqlite" or "postgresql": the few SQL differences of bridge/operations.
    dialect: ClassVar[str] = ""
    # Set by open(): hashes emails and phones as the search index does.
    search: SearchHasher | None = None

    async def open(self) -> None:
        """Connect and apply pending migrations."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def ping(self) -> None:
        """Raise :class:`~bridge.errors.StoreUnavailable` when the store is unreachable."""
        raise NotImplementedError

    # ------------------------------------------------------------------ intake

    async def ingest(
        self,
        leads: Sequence[LeadIn],
        destinations: Sequence[str],
        quarantine: Sequence[QuarantineIn],
        now: float,
    ) -> IngestResult:
        """Store a batch in one durable transaction.

        New lead ids are inserted with one ``pending`` delivery per destination
        (``next_attempt_at = now``); ids already stored (or repeated within the
        batch) are duplicates and create nothing. Quarantine items are inserted in
        the same transaction. Returns only after the commit is durable; raises
        :class:`~bridge.errors.StoreUnavailable` if it could not commit.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ delivery

    async def claim(
        self,
        *,
        destination: str,
        limit: int,
        lease_seconds: float,
        now: float,
    ) -> list[Claim]:
        """Lease up to ``limit`` due pending deliveries of one destination, oldest due first."""
        raise NotImplementedError

    async def finish(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Apply attempt outcomes; each is applied only if its lease token still
        matches (fencing). Records an ``attempts`` row for each applied outcome.
        Returns, per outcome, whether it was applied."""
        raise NotImplementedError

    async def release(self, leases: Sequence[tuple[int, str]], now: float) -> int:
        """Give leases back without an attempt (graceful shutdown): due again at ``now``."""
        raise NotImplementedError

    async def replay(
        self,
        *,
        now: float,
        lead_id: str | None = None,
        destination: str | None = None,
        dead_only: bool = False,
        force: bool = False,
    ) -> ReplayResult:
        """Make deliveries due again (``pending``, ``next_attempt_at = now``, attempts
        kept, ``created_at`` reset so max_age starts over). Delivered rows are only
        requeued with ``force``. With ``lead_id`` given and no delivery row for a
        configured destination, nothing is created (see :meth:`add_deliveries`).

        In bounded transactions (:meth:`replay_part`): a replay of many dead
        letters never holds the database for long; it is not atomic as a whole."""
        result = ReplayResult(not_found=1)
        for part in await in_bounded_transactions(
            lambda after: self.replay_part(
                ReplayFilter(lead_id, destination, dead_only, force),
                now=now,
                after=after,
                limit=PART_ROWS,
            )
        ):
            result.requeued += part.requeued
            result.refused_delivered += part.refused_delivered
            result.not_found = min(result.not_found, part.not_found)
        return result

    async def replay_part(
        self, which: ReplayFilter, *, now: float, after: Any, limit: int
    ) -> tuple[ReplayResult, Any]:
        """One transaction of :meth:`replay`, from cursor ``after`` (None: the
        start), examining about ``limit`` rows: what it did (``not_found`` set
        when nothing matched here) and the next cursor, None when done."""
        raise NotImplementedError

    async def requeue(
        self,
        *,
        now: float,
        configured: Sequence[str],
        lead_id: str | None = None,
        destination: str | None = None,
        dead_only: bool = False,
        force: bool = False,
    ) -> ReplayResult:
        """What operators call "replay" (CLI and admin API): :meth:`replay`, and for
        one lead first the deliveries it is missing for ``configured`` destinations
        (it arrived before they existed), which count as requeued."""
        added = 0
        if lead_id is not None:
            wanted = [destination] if destination else list(configured)
            added = await self.add_deliveries(lead_id, wanted, now)
        result = await self.replay(
            now=now, lead_id=lead_id, destination=destination, dead_only=dead_only, force=force
        )
        if added:
            result.requeued += added
            result.not_found = 0
        if lead_id is None:
            result.not_found = 0  # nothing dead is "0 requeued", not a missing lead
        return result

    async def add_deliveries(self, lead_id: str, destinations: Sequence[str], now: float) -> int:
        """Create missing pending deliveries of a lead (a destination added later)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ queries

    async def status(self, now: float) -> StoreStatus:
        """Everything counted: a scan of whole tables (operators' status views)."""
        raise NotImplementedError

    async def queue_depths(self, now: float) -> list[DestinationStatus]:
        """Per destination, the pending and dead deliveries (``counts`` holds only
        those two), the leased ones and the oldest pending one: what metrics
        scrapes read every time, so backends count them through indexes, at the
        cost of the backlog and the dead letters, not of the whole history."""
        return [
            DestinationStatus(
                d.destination,
                {"pending": d.counts.get("pending", 0), "dead": d.counts.get("dead", 0)},
                d.in_flight,
                d.oldest_pending_at,
            )
            for d in (await self.status(now)).destinations
        ]

    async def finished_counts(self) -> dict[str, dict[str, int]]:
        """Delivered and skipped deliveries per destination: a count that grows
        with the history (callers refresh it now and then, see
        :class:`bridge.metrics_server.QueueGauges`)."""
        return {
            d.destination: {
                "delivered": d.counts.get("delivered", 0),
                "skipped": d.counts.get("skipped", 0),
            }
            for d in (await self.status(time.time())).destinations
        }

    async def list_deliveries(
        self,
        *,
        status: str | None = None,
        destination: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[DeliveryRecord]:
        """Newest first (by ``updated_at``)."""
        raise NotImplementedError

    async def get_lead(self, lead_id: str) -> LeadRecord | None:
        raise NotImplementedError

    async def get_deliveries(self, lead_id: str) -> list[DeliveryRecord]:
        raise NotImplementedError

    async def get_attempts(self, lead_id: str) -> list[AttemptRecord]:
        """Oldest first."""
        raise NotImplementedError

    async def list_quarantine(self, limit: int = 100) -> list[dict[str, Any]]:
        raise NotImplementedError

    # ------------------------------------------------------------------ data protection

    async def purge_payloads(self, before: float) -> int:
        """Null the payload of leads received before ``before`` whose deliveries are
        all finished (delivered, skipped or dead... only delivered/skipped here);
        the id row stays so provider retries are still duplicates. In bounded
        transactions (:meth:`purge_payloads_part`)."""
        parts = await in_bounded_transactions(
            lambda after: self.purge_payloads_part(before, after=after, limit=PART_ROWS)
        )
        return sum(parts)

    async def purge_payloads_part(
        self, before: float, *, after: Any, limit: int
    ) -> tuple[int, Any]:
        """One transaction of :meth:`purge_payloads`: at most ``limit`` leads
        received before ``before`` examined, from cursor ``after`` (None: the
        oldest); how many were purged and the next cursor, None when done."""
        raise NotImplementedError

    async def quarantine_cutoff(self, *, max_rows: int | None, max_bytes: int | None) -> int | None:
        """The largest quarantine id that must go so that the newest rows fit in
        ``max_rows`` rows and ``max_bytes`` bytes of ``raw`` (None: all fit)."""
        raise NotImplementedError

    async def clear_search_index(self, lead_ids: Sequence[str]) -> int:
        """Drop the search-index hashes (email, phone) of these leads, keeping their
        rows; for tombstones and any other path that keeps a lead id but not its
        data. Erasing a lead row removes its hashes anyway. Returns rows changed."""
        raise NotImplementedError

    # ------------------------------------------------------------------ operator queries

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A read-only query of :mod:`bridge.operations`, ``?`` placeholders, SQL
        both backends accept (see ``dialect`` for the rest). Never called with
        text from a request: the statements are the operations' own."""
        raise NotImplementedError

    async def execute(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        """Writes of :mod:`bridge.operations` in one transaction (``?``
        placeholders); the row count of each statement."""
        raise NotImplementedError

    async def drop_quarantine(
        self, *, before: float | None = None, upto_id: int | None = None, limit: int
    ) -> int:
        """Delete at most ``limit`` of the oldest quarantine rows (by id) that were
        received before ``before`` or have an id up to ``upto_id``, in one
        transaction; returns how many went. Callers repeat until it returns less
        than ``limit`` (bounded transactions, see :mod:`bridge.retention`)."""
        raise NotImplementedError

    async def erase_plan(self, *, email: str | None, lead_id: str | None) -> ErasePlan:
        """Find, with reads only, everything an erasure removes (exact matching,
        see :mod:`bridge.store.erasure`)."""
        raise NotImplementedError

    async def erase_part(self, part: ErasePart, now: float) -> EraseReport:
        """Remove one part of a plan in one transaction, tombstoning each lead
        id removed (``erased_leads``) so that a re-send of it is a duplicate."""
        raise NotImplementedError

    async def erase_finished(self) -> bool:
        """After the last part: make the freed bytes leave the files, if the
        backend can; False when that could not be done now (run it again)."""
        return True

    async def erase_preview(
        self, *, email: str | None = None, lead_id: str | None = None
    ) -> EraseReport:
        """What :meth:`erase` would remove now (a dry run: nothing changes)."""
        return (await self.erase_plan(email=email, lead_id=lead_id)).report()

    async def erase(
        self,
        *,
        email: str | None = None,
        lead_id: str | None = None,
        progress: Callable[[int, int], None] | None = None,
        chunk: int | None = None,
    ) -> EraseReport:
        """Remove a person's data everywhere (leads, deliveries, attempts,
        quarantine, errors quoting the address), one bounded transaction per
        part of the plan, paced by :func:`in_bounded_transactions` so intake's
        commits go in between. ``progress(done, total)`` follows each part."""
        plan = await self.erase_plan(email=email, lead_id=lead_id)
        parts = list(plan.parts(chunk or CHUNK))
        done = 0

        async def one(index: int | None) -> tuple[EraseReport, int | None]:
            nonlocal done
            i = index or 0
            removed = await self.erase_part(parts[i], time.time())
            done += parts[i].size
            if progress is not None:
                progress(done, plan.size)
            return removed, (i + 1 if i + 1 < len(parts) else None)

        report = EraseReport()
        for removed in await in_bounded_transactions(one) if parts else []:
            report.add(removed)
        report.files_clean = await self.erase_finished()
        return report
