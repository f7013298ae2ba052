"""PostgreSQL store: the console's and the CLI's reads (no writes here).

Each count query matches one partial index (pending, dead, delivered), so the
console does not scan the delivery history.
"""

from __future__ import annotations

import time
from typing import Any

from psycopg import sql

from bridge.store.base import (
    DELIVERY_COLUMNS,
    STATUSES,
    AttemptRecord,
    DeliveryRecord,
    DestinationStatus,
    LeadRecord,
    StoreStatus,
    delivery_from_row,
)
from bridge.store.postgres_base import PostgresBase, _filters


class PostgresReads(PostgresBase):
    async def queue_depths(self, now: float) -> list[DestinationStatus]:
        # Each query matches one partial index (pending, dead): no scan of the history.
        dead = dict(
            await self._fetch(
                "SELECT destination, count(*) FROM deliveries WHERE status = 'dead' "
                "GROUP BY destination"
            )
        )
        found = []
        for dest, pending, in_flight, oldest in await self._fetch(
            "SELECT destination, count(*), count(*) FILTER (WHERE lease_token IS NOT NULL "
            "AND next_attempt_at > %s), min(created_at) FROM deliveries "
            "WHERE status = 'pending' GROUP BY destination",
            (now,),
        ):
            counts = {"pending": pending, "dead": dead.pop(dest, 0)}
            found.append(DestinationStatus(dest, counts, in_flight, oldest))
        found += [DestinationStatus(d, {"pending": 0, "dead": n}, 0, None) for d, n in dead.items()]
        return sorted(found, key=lambda d: d.destination)

    async def finished_counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        for dest, status, count in await self._fetch(
            "SELECT destination, status, count(*) FROM deliveries "
            "WHERE status IN ('delivered', 'skipped') GROUP BY 1, 2"
        ):
            counts.setdefault(dest, {"delivered": 0, "skipped": 0})[status] = count
        return counts

    async def status(self, now: float) -> StoreStatus:
        per: dict[str, dict[str, int]] = {}
        for dest, status, count in await self._fetch(
            "SELECT destination, status, count(*) FROM deliveries GROUP BY 1, 2"
        ):
            per.setdefault(dest, dict.fromkeys(STATUSES, 0))[status] = count
        flight = {
            dest: (in_flight, oldest)
            for dest, in_flight, oldest in await self._fetch(
                "SELECT destination, count(*) FILTER (WHERE lease_token IS NOT NULL "
                "AND next_attempt_at > %s), min(created_at) FROM deliveries "
                "WHERE status = 'pending' GROUP BY destination",
                (now,),
            )
        }
        dests = [DestinationStatus(d, per[d], *flight.get(d, (0, None))) for d in sorted(per)]
        ((leads, quarantined, undelivered, unrouted),) = await self._fetch(
            "SELECT (SELECT count(*) FROM leads), (SELECT count(*) FROM quarantine), "
            "(SELECT count(*) FROM leads l WHERE NOT EXISTS "
            " (SELECT 1 FROM deliveries d WHERE d.lead_id = l.id)), "
            "(SELECT count(*) FROM (SELECT lead_id FROM deliveries GROUP BY lead_id "
            " HAVING bool_and(status = 'skipped')) s)"
        )
        return StoreStatus(leads, quarantined, undelivered, unrouted, dests)

    async def list_deliveries(
        self,
        *,
        status: str | None = None,
        destination: str | None = None,
        since: float | None = None,
        limit: int = 100,
    ) -> list[DeliveryRecord]:
        where, params = _filters(status=status or None, destination=destination or None)
        if since is not None:
            where.append(sql.SQL("updated_at >= %s"))
            params.append(since)
        query = sql.SQL(
            "SELECT {} FROM deliveries WHERE {} ORDER BY updated_at DESC, id DESC LIMIT %s"
        ).format(sql.SQL(DELIVERY_COLUMNS), sql.SQL(" AND ").join(where))
        now = time.time()
        return [delivery_from_row(r, now) for r in await self._fetch(query, [*params, limit])]

    async def get_lead(self, lead_id: str) -> LeadRecord | None:
        rows = await self._fetch(
            "SELECT id, received_at, created, url, payload FROM leads WHERE id = %s", (lead_id,)
        )
        return LeadRecord(*rows[0]) if rows else None

    async def get_deliveries(self, lead_id: str) -> list[DeliveryRecord]:
        query = sql.SQL("SELECT {} FROM deliveries WHERE lead_id = %s ORDER BY destination").format(
            sql.SQL(DELIVERY_COLUMNS)
        )
        now = time.time()
        return [delivery_from_row(r, now) for r in await self._fetch(query, (lead_id,))]

    async def get_attempts(self, lead_id: str) -> list[AttemptRecord]:
        rows = await self._fetch(
            "SELECT delivery_id, lead_id, destination, number, started_at, duration, outcome, "
            "error, status_code, remote_id FROM attempts WHERE lead_id = %s "
            "ORDER BY started_at, id",
            (lead_id,),
        )
        return [AttemptRecord(*r) for r in rows]

    async def list_quarantine(self, limit: int = 100) -> list[dict[str, Any]]:
        keys = ("id", "received_at", "reason", "lead_id", "item_index", "raw")
        rows = await self._fetch(
            "SELECT id, received_at, reason, lead_id, item_index, raw FROM quarantine "
            "ORDER BY id DESC LIMIT %s",
            (limit,),
        )
        return [dict(zip(keys, r, strict=True)) for r in rows]
