"""PostgreSQL store: data protection (retention purge, quarantine limits, erasure).

Every statement here works on a bounded part (a cursor and a LIMIT, or a
planned part of an erasure), so one call is one short transaction.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from bridge.store.base import (
    EraseReport,
    quarantine_cutoff_query,
    quarantine_drop_condition,
)
from bridge.store.erasure import (
    ERASE_AFTER_LEADS,
    ERASE_BEFORE_LEADS,
    ERASE_LEADS,
    ERASED_ERROR,
    ErasePart,
    ErasePlan,
    PlanBuilder,
)
from bridge.store.postgres_base import PostgresBase
from bridge.store.sql_shared import PURGE_SET, PURGEABLE


class PostgresPrivacy(PostgresBase):
    async def purge_payloads_part(
        self, before: float, *, after: Any, limit: int
    ) -> tuple[int, Any]:
        # The next `limit` leads received before `before`, by (received_at, id)
        # from the cursor; one statement, so one short transaction.
        start, start_id = after if after is not None else (float("-inf"), "")
        rows = await self._fetch(
            "WITH part AS (SELECT received_at, id FROM leads WHERE received_at < %s "  # noqa: S608 - our constants
            "AND received_at >= %s AND (received_at, id) > (%s, %s) "
            "ORDER BY received_at, id LIMIT %s), "
            f"purged AS (UPDATE leads SET {PURGE_SET.format(mark='%s')} FROM part "
            f"WHERE leads.id = part.id AND {PURGEABLE} RETURNING 1) "
            "SELECT (SELECT count(*) FROM purged), (SELECT count(*) FROM part), last.* "
            "FROM (SELECT 1) AS one LEFT JOIN (SELECT received_at, id FROM part "
            "ORDER BY received_at DESC, id DESC LIMIT 1) AS last ON true",
            (before, start, start, start_id, limit, time.time()),
        )
        ((purged, examined, last_at, last_id),) = rows
        return int(purged), ((last_at, last_id) if examined == limit else None)

    async def clear_search_index(self, lead_ids: Sequence[str]) -> int:
        if not lead_ids:
            return 0
        async with self._connection() as conn:
            cur = await conn.execute(
                "UPDATE leads SET email_hash = NULL, phone_hash = NULL WHERE id = ANY(%s) "
                "AND (email_hash IS NOT NULL OR phone_hash IS NOT NULL)",
                (list(lead_ids),),
            )
            return int(cur.rowcount)

    async def quarantine_cutoff(self, *, max_rows: int | None, max_bytes: int | None) -> int | None:
        query, params = quarantine_cutoff_query(max_rows, max_bytes, "%s", "octet_length(raw)")
        if not query:
            return None
        rows = await self._fetch(query, params)
        return int(rows[0][0]) if rows else None

    async def drop_quarantine(
        self, *, before: float | None = None, upto_id: int | None = None, limit: int
    ) -> int:
        cond, params = quarantine_drop_condition(before, upto_id, "%s")
        if not cond:
            return 0
        async with self._connection() as conn:
            cur = await conn.execute(
                "DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine "  # noqa: S608
                f"WHERE {cond} ORDER BY id LIMIT %s)",
                [*params, limit],
            )
            return int(cur.rowcount)

    async def erase_plan(self, *, email: str | None, lead_id: str | None) -> ErasePlan:
        builder = PlanBuilder(email, lead_id, mark="%s", find="strpos")
        async with self._connection() as conn:
            for query, params, take in builder.steps():
                cur = await conn.execute(query, params)  # type: ignore[arg-type]
                take(await cur.fetchall())
        return builder.plan

    async def erase_part(self, part: ErasePart, now: float) -> EraseReport:
        """Delete the rows. PostgreSQL frees the space at the next (auto)vacuum;
        ``VACUUM FULL`` rewrites the tables when the old bytes must go at once."""
        report = EraseReport()
        ids = list(part.lead_ids)
        if ids:
            # Tombstones first, committed on their own: an intake statement of
            # another replica that starts from now on skips these ids, and one
            # already running finds the lead row still there (a duplicate). In
            # one transaction with the delete, a re-send arriving meanwhile would
            # wait for the deleted row and then insert the lead again.
            async with self._connection() as conn:
                await conn.execute(
                    "INSERT INTO erased_leads (id, erased_at) SELECT id, %s FROM leads "
                    "WHERE id = ANY(%s) ON CONFLICT (id) DO NOTHING",
                    (now, ids),
                )
        async with self._connection() as conn, conn.transaction():

            async def run(steps: Sequence[tuple[str, str, str]]) -> None:
                for field, query, source in steps:
                    params: list[Any] = [list(getattr(part, source))]
                    if "{mark}" in query:
                        params.insert(0, ERASED_ERROR)
                    cur = await conn.execute(query.format(ids="= ANY(%s)", mark="%s"), params)
                    setattr(report, field, getattr(report, field) + int(cur.rowcount))

            await run(ERASE_BEFORE_LEADS)
            cur = await conn.execute(ERASE_LEADS.format(ids="= ANY(%s)"), (ids,))
            report.lead_ids = sorted(r[0] for r in await cur.fetchall())
            report.leads = len(report.lead_ids)
            await run(ERASE_AFTER_LEADS)
        return report
