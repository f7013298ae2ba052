"""SQLite store: one process, zero setup.

Writes go to a writer process (:mod:`bridge.store.sqlite_writer`) that group-
commits whatever has queued up since its last commit, so each fsync of
``synchronous=FULL`` carries many webhook requests, and the event loop never
shares its GIL with SQLite work. Reads run in threads on per-thread
connections of this process (WAL lets them run beside the writer). WAL
checkpoints run in a background thread.

The plumbing (lifecycle, the writer process, reads) is
:class:`~bridge.store.sqlite_base.SQLiteBase`.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
import uuid
from collections.abc import Sequence
from typing import Any

from bridge.leads import BodyResult
from bridge.store.base import (
    DELIVERY_COLUMNS,
    STATUSES,
    AttemptRecord,
    Claim,
    DeliveryRecord,
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
    delivery_from_row,
    quarantine_cutoff_query,
)
from bridge.store.erasure import ErasePart, ErasePlan, PlanBuilder
from bridge.store.sqlite_base import CHECKPOINT_WAIT, SQLiteBase
from bridge.store.sqlite_ingest import lead_rows

# Erasure's WAL checkpoint: tries while it is busy (CHECKPOINT_WAIT apart).
CHECKPOINT_TRIES = 50

log = logging.getLogger("lead_bridge.store")

# Metrics scrapes (queue_depths): through the partial indexes of pending and of
# dead deliveries, never a scan of the whole table.
PENDING_BY_DESTINATION = (
    "SELECT destination, count(*), "
    "count(*) FILTER (WHERE lease_token IS NOT NULL AND next_attempt_at > ?), "
    "min(created_at) FROM deliveries WHERE status = 'pending' GROUP BY destination"
)
DEAD_BY_DESTINATION = (
    "SELECT destination, count(*) FROM deliveries WHERE status = 'dead' GROUP BY destination"
)
# The whole table: refreshed now and then only.
FINISHED_BY_DESTINATION = (
    "SELECT destination, status, count(*) FROM deliveries "
    "WHERE status IN ('delivered', 'skipped') GROUP BY 1, 2"
)


class SQLiteStore(SQLiteBase):
    # ------------------------------------------------------------------ intake

    async def ingest(
        self,
        leads: Sequence[LeadIn],
        destinations: Sequence[str],
        quarantine: Sequence[QuarantineIn],
        now: float,
    ) -> IngestResult:
        result: IngestResult = await self._write(
            "ingest",
            lead_rows(leads, now),
            tuple(destinations),
            [(q.reason, q.lead_id, q.item_index, q.raw) for q in quarantine],
            now,
        )
        return result

    async def ingest_body(self, body: bytes, destinations: Sequence[str], now: float) -> BodyResult:
        # Not in the Store interface (bridge.intake.BodyStore): parsed in the
        # writer process (same function, same result), so the event loop,
        # intake's bottleneck, only hands the bytes over.
        result: BodyResult = await self._write("ingest_body", body, tuple(destinations), now)
        return result

    # ------------------------------------------------------------------ delivery

    async def claim(
        self, *, destination: str, limit: int, lease_seconds: float, now: float
    ) -> list[Claim]:
        claims: list[Claim] = await self._write(
            "claim", destination, limit, now + lease_seconds, now, uuid.uuid4().hex
        )
        return claims

    async def finish(self, outcomes: Sequence[Outcome]) -> list[bool]:
        if not outcomes:
            return []
        applied: list[bool] = await self._write("finish", list(outcomes))
        self.share.finished(len(applied))
        return applied

    async def release(self, leases: Sequence[tuple[int, str]], now: float) -> int:
        if not leases:
            return 0
        count: int = await self._write("release", list(leases), now)
        return count

    async def replay_part(
        self, which: ReplayFilter, *, now: float, after: Any, limit: int
    ) -> tuple[ReplayResult, Any]:
        part: tuple[ReplayResult, Any] = await self._write(
            "replay_part",
            now,
            which.lead_id,
            which.destination,
            which.dead_only,
            which.force,
            after,
            limit,
        )
        return part

    async def add_deliveries(self, lead_id: str, destinations: Sequence[str], now: float) -> int:
        count: int = await self._write("add_deliveries", lead_id, tuple(destinations), now)
        return count

    # ------------------------------------------------------------------ queries

    async def queue_depths(self, now: float) -> list[DestinationStatus]:
        def q(conn: sqlite3.Connection) -> list[DestinationStatus]:
            dead = dict(conn.execute(DEAD_BY_DESTINATION).fetchall())
            found = []
            for dest, pending, in_flight, oldest in conn.execute(PENDING_BY_DESTINATION, (now,)):
                counts = {"pending": pending, "dead": dead.pop(dest, 0)}
                found.append(DestinationStatus(dest, counts, in_flight, oldest))
            found += [
                DestinationStatus(d, {"pending": 0, "dead": n}, 0, None) for d, n in dead.items()
            ]
            return sorted(found, key=lambda d: d.destination)

        return await self._read(q)

    async def finished_counts(self) -> dict[str, dict[str, int]]:
        def q(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
            counts: dict[str, dict[str, int]] = {}
            for dest, status, count in conn.execute(FINISHED_BY_DESTINATION):
                counts.setdefault(dest, {"delivered": 0, "skipped": 0})[status] = count
            return counts

        return await self._read(q)

    async def status(self, now: float) -> StoreStatus:
        def q(conn: sqlite3.Connection) -> StoreStatus:
            per: dict[str, dict[str, int]] = {}
            for dest, status, count in conn.execute(
                "SELECT destination, status, count(*) FROM deliveries GROUP BY 1, 2"
            ):
                per.setdefault(dest, dict.fromkeys(STATUSES, 0))[status] = count
            dests = []
            for dest in sorted(per):
                in_flight, oldest = conn.execute(
                    "SELECT count(*) FILTER (WHERE lease_token IS NOT NULL AND next_attempt_at > ?), "
                    "min(created_at) FROM deliveries WHERE status = 'pending' AND destination = ?",
                    (now, dest),
                ).fetchone()
                dests.append(DestinationStatus(dest, per[dest], in_flight or 0, oldest))
            leads = conn.execute("SELECT count(*) FROM leads").fetchone()[0]
            quarantined = conn.execute("SELECT count(*) FROM quarantine").fetchone()[0]
            undelivered = conn.execute(
                "SELECT count(*) FROM leads l WHERE NOT EXISTS "
                "(SELECT 1 FROM deliveries d WHERE d.lead_id = l.id)"
            ).fetchone()[0]
            unrouted = conn.execute(
                "SELECT count(*) FROM (SELECT lead_id FROM deliveries GROUP BY lead_id "
                "HAVING sum(status <> 'skipped') = 0)"
            ).fetchone()[0]
            return StoreStatus(leads, quarantined, undelivered, unrouted, dests)

        return await self._read(q)

    async def list_deliveries(
        self,
        *,
        status: str | None = None,
        destination: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[DeliveryRecord]:
        where, params = ["1 = 1"], []  # type: tuple[list[str], list[Any]]
        if status:
            where.append("status = ?")
            params.append(status)
        if destination:
            where.append("destination = ?")
            params.append(destination)
        if since is not None:
            where.append("updated_at >= ?")
            params.append(since)
        sql = (
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE {' AND '.join(where)} "  # noqa: S608
            "ORDER BY updated_at DESC, id DESC LIMIT ?"
        )
        now = time.time()
        return await self._read(
            lambda c: [delivery_from_row(r, now) for r in c.execute(sql, [*params, limit])]
        )

    async def get_lead(self, lead_id: str) -> LeadRecord | None:
        def q(conn: sqlite3.Connection) -> LeadRecord | None:
            row = conn.execute(
                "SELECT id, received_at, created, url, payload FROM leads WHERE id = ?", (lead_id,)
            ).fetchone()
            return LeadRecord(*row) if row else None

        return await self._read(q)

    async def get_deliveries(self, lead_id: str) -> list[DeliveryRecord]:
        sql = f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE lead_id = ? ORDER BY destination"  # noqa: S608
        now = time.time()
        return await self._read(
            lambda c: [delivery_from_row(r, now) for r in c.execute(sql, (lead_id,))]
        )

    async def get_attempts(self, lead_id: str) -> list[AttemptRecord]:
        sql = (
            "SELECT delivery_id, lead_id, destination, number, started_at, duration, outcome, "
            "error, status_code, remote_id FROM attempts WHERE lead_id = ? ORDER BY started_at, id"
        )
        return await self._read(lambda c: [AttemptRecord(*r) for r in c.execute(sql, (lead_id,))])

    async def list_quarantine(self, limit: int = 100) -> list[dict[str, Any]]:
        sql = (
            "SELECT id, received_at, reason, lead_id, item_index, raw FROM quarantine "
            "ORDER BY id DESC LIMIT ?"
        )
        keys = ("id", "received_at", "reason", "lead_id", "item_index", "raw")
        return await self._read(
            lambda c: [dict(zip(keys, r, strict=True)) for r in c.execute(sql, (limit,))]
        )

    # ------------------------------------------------------------------ data protection

    async def purge_payloads_part(
        self, before: float, *, after: Any, limit: int
    ) -> tuple[int, Any]:
        part: tuple[int, Any] = await self._write("purge_payloads_part", before, after, limit)
        return part

    async def quarantine_cutoff(self, *, max_rows: int | None, max_bytes: int | None) -> int | None:
        sql, params = quarantine_cutoff_query(max_rows, max_bytes, "?", "length(CAST(raw AS BLOB))")
        if not sql:
            return None
        rows = await self._read(lambda c: c.execute(sql, params).fetchall())
        return int(rows[0][0]) if rows else None

    async def drop_quarantine(
        self, *, before: float | None = None, upto_id: int | None = None, limit: int
    ) -> int:
        count: int = await self._write("drop_quarantine", before, upto_id, limit)
        return count

    async def erase_plan(self, *, email: str | None, lead_id: str | None) -> ErasePlan:
        builder = PlanBuilder(email, lead_id, mark="?", find="instr")

        def q(conn: sqlite3.Connection) -> ErasePlan:
            for sql, params, take in builder.steps():
                take(conn.execute(sql, params).fetchall())
            return builder.plan

        return await self._read(q)

    async def erase_part(self, part: ErasePart, now: float) -> EraseReport:
        report: EraseReport = await self._write(
            "erase_part",
            part.lead_ids,
            part.quarantine_ids,
            part.attempt_ids,
            part.scrub_ids,
            now,
        )
        return report

    async def erase_finished(self) -> bool:
        # secure_delete zeroed the freed pages; the checkpoint moves them out of the WAL.
        await self._write("noop")
        return await asyncio.to_thread(self._checkpoint)

    async def clear_search_index(self, lead_ids: Sequence[str]) -> int:
        if not lead_ids:
            return 0
        count: int = await self._write("clear_search_index", list(lead_ids))
        return count

    # ------------------------------------------------------------------ operator queries

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return await self._read(lambda c: c.execute(sql, params).fetchall())

    async def execute(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        counts: list[int] = await self._write(
            "execute", [(sql, list(params)) for sql, params in statements]
        )
        return counts

    def _checkpoint(self) -> bool:
        """Empty the WAL (which may still hold erased bytes). busy=1 means a
        reader pinned an old snapshot or another checkpoint ran at that moment
        (the background one, each second): both pass, so try for a few seconds
        before saying it did not work. Runs in a thread."""
        conn = self._connect()
        # Each try waits at most CHECKPOINT_WAIT in SQLite's busy handler, not the
        # connection's 30 s busy_timeout: the tries bound the whole wait (~5-10 s).
        conn.execute(f"PRAGMA busy_timeout={int(CHECKPOINT_WAIT * 1000)}")
        try:
            for _ in range(CHECKPOINT_TRIES):
                busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if not busy:
                    return True
                time.sleep(CHECKPOINT_WAIT)
        finally:
            conn.close()
        log.warning("event=erase_checkpoint_blocked backend=sqlite tries=%d", CHECKPOINT_TRIES)
        return False
