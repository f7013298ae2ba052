"""PostgreSQL store: several ``lead-bridge`` replicas share one queue.

Same tables, columns and behaviour as the SQLite store. What changes:

* Claims lock rows with ``FOR UPDATE SKIP LOCKED``, so replicas claiming the same
  destination at once never get the same row and never wait on each other.
* Duplicate lead ids sent to different replicas are settled by the primary key
  (``ON CONFLICT DO NOTHING``): the second insert waits for the first transaction
  and then sees a duplicate.
* Intake is group-committed: one writer task writes whatever ``ingest`` calls
  have queued since its previous commit in one statement
  (bridge/store/postgres_intake.py).
* Migrations run under a transaction-level advisory lock, so replicas starting at
  once apply them exactly once.
* Every psycopg error is translated in one place (postgres_base.py): connection problems,
  pool timeouts and failed commits become :class:`StoreUnavailable` (intake
  answers 503 so the provider retries; readiness fails).

The schema (PostgreSQL namespace) holding the tables is, in order: the ``schema``
argument; the ``search_path`` set in the URL's ``options``
(``postgresql://host/db?options=-csearch_path%3Dlead_bridge``); otherwise the
connection's default search path (normally ``public``). A named schema is created
if missing. Tests use a random schema per run so runs do not collide.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from bridge.errors import ConfigError, StoreUnavailable
from bridge.logs import event
from bridge.store.base import (
    Claim,
    IngestResult,
    LeadIn,
    Outcome,
    QuarantineIn,
    ReplayFilter,
    ReplayResult,
    outcome_values,
    replay_choice,
    versions_to_apply,
)
from bridge.store.postgres_base import (
    _filters,
    _schema_from,
    _Settings,
    _translate,
    check_taken,
)
from bridge.store.postgres_intake import GroupWriter
from bridge.store.postgres_privacy import PostgresPrivacy
from bridge.store.postgres_reads import PostgresReads
from bridge.store.postgres_schema import MIGRATION_LOCK, MIGRATIONS
from bridge.store.search import INDEXED_SETTING, SearchHasher, search_key_plan_async

log = logging.getLogger("lead_bridge.store")

# One statement claims a batch. The subquery is served by the partial index
# deliveries_due (destination, next_attempt_at) WHERE status = 'pending': an
# index range scan in next_attempt_at order that stops after LIMIT rows, so its
# cost does not grow with the number of pending rows (tests/store/test_postgres.py
# checks the plan; bench/pg_claims.py measures 1k against 1M pending). A leased
# row's next_attempt_at is its lease's end, so leased rows sit beyond `now` in
# the index and the scan does not walk them.
# A lease expires on the database's clock (lease_expires_at), so a replica whose
# clock runs ahead cannot take a lease another replica still holds;
# next_attempt_at (the caller's clock) still orders and schedules the rows.
# Parameters: lease end (caller clock), token, lease seconds, destination, now, limit.
CLAIM = (
    "WITH c AS (UPDATE deliveries SET next_attempt_at = %s, lease_token = %s, "
    "lease_expires_at = extract(epoch FROM now()) + %s "
    "WHERE id IN (SELECT id FROM deliveries WHERE status = 'pending' "
    "AND destination = %s AND next_attempt_at <= %s "
    "AND (lease_token IS NULL OR lease_expires_at IS NULL "
    "OR lease_expires_at <= extract(epoch FROM now())) "
    "ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED) "
    "RETURNING id, lead_id, attempts, created_at) "
    "SELECT c.id, c.lead_id, c.attempts, c.created_at, l.payload, l.received_at "
    "FROM c LEFT JOIN leads l ON l.id = c.lead_id ORDER BY c.id"
)


# The finish statement's float8[] parameters (next_attempt_at, delivered_at,
# updated_at, started_at, duration). Its arrays go in binary (%b) as intake's do:
# psycopg quotes text arrays element by element in Python (docs/scaling.md).
_FINISH_FLOATS = (4, 8, 9, 10, 11)

# Leads re-hashed per statement batch when the search index is rebuilt.
REINDEX_CHUNK = 5000


class PostgresStore(PostgresReads, PostgresPrivacy):
    """PostgreSQL backend (psycopg 3 with an async connection pool).

    ``schema``: the PostgreSQL schema holding the tables (see the module docstring);
    ``pool_size``: at most this many connections; ``timeout``: seconds to wait for
    a pooled connection before raising ``StoreUnavailable``; ``max_batch``: most
    ingest calls committed together; ``pgbouncer``: the URL points at PgBouncer in
    transaction mode (no server-side prepared statements, no schema in the URL).
    """

    dialect = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        schema: str | None = None,
        timeout: float = 5.0,
        max_batch: int = 500,
        search_key: str | None = None,
        pgbouncer: bool = False,
    ) -> None:
        self.conninfo, self.schema = _schema_from(url, schema)
        if pgbouncer and self.schema:
            # A startup option is session state: PgBouncer in transaction mode
            # neither forwards it nor keeps it per client.
            raise ConfigError(
                f"a schema ({self.schema!r}) cannot be chosen in the URL behind PgBouncer: "
                "use the database's default (public) or ALTER ROLE ... SET search_path",
                path="storage.url",
            )
        self.pgbouncer = pgbouncer
        self.search_key = search_key
        self.pool_size = max(2, pool_size)
        self.timeout = timeout
        self.max_batch = max_batch
        self._pool: AsyncConnectionPool | None = None
        self.search: SearchHasher | None = None
        self._writer = GroupWriter(self._connection, lambda: self.search, max_batch)

    # ------------------------------------------------------------------ plumbing

    async def open(self) -> None:
        pool = AsyncConnectionPool(
            self.conninfo,
            # Behind PgBouncer (transaction mode) consecutive transactions of one
            # client connection run on different server connections: psycopg's
            # server-side prepared statements (after 5 uses) would be missing or
            # clash there, so they are turned off.
            kwargs={"autocommit": True, "prepare_threshold": None if self.pgbouncer else 5},
            min_size=2,
            max_size=self.pool_size,
            timeout=self.timeout,
            # A connection broken by a database restart is noticed and replaced
            # when it is taken from the pool, not by the request that uses it.
            check=check_taken,
            reconnect_timeout=float("inf"),
            open=False,
            name="lead-bridge",
        )
        try:
            await pool.open(wait=True, timeout=self.timeout)
        except psycopg.Error as exc:
            await pool.close()
            raise _translate(exc) from exc
        self._pool = pool
        try:
            await self._migrate()
            await self._prepare_search_index()
        except BaseException:
            self._pool = None
            await pool.close()
            raise
        self._writer.start()

    async def _migrate(self) -> None:
        async with self._connection() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                (MIGRATION_LOCK, self.schema or ""),
            )
            if self.schema:
                await conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
                )
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)"
            )
            cur = await conn.execute("SELECT max(version) FROM schema_version")
            row = await cur.fetchone()
            current = (row[0] if row else None) or 0
            for version in versions_to_apply(current, len(MIGRATIONS)):
                for statement in MIGRATIONS[version - 1]:
                    await conn.execute(statement)  # type: ignore[arg-type]
                await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
                event(log, "migrated", backend="postgres", schema=self.schema, version=version)

    async def _prepare_search_index(self) -> None:
        """As SQLiteStore's: resolve the search key, rebuild the index if stale.
        Under the migration lock, so replicas starting together agree on one key."""
        async with self._connection() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                (MIGRATION_LOCK, self.schema or ""),
            )
            key, rebuild = await search_key_plan_async(_Settings(conn), self.search_key)
            hasher = SearchHasher(key)
            if rebuild:
                # By id, REINDEX_CHUNK leads at a time: memory stays bounded.
                done, after = 0, ""
                while True:
                    cur = await conn.execute(
                        "SELECT id, payload FROM leads WHERE id > %s ORDER BY id LIMIT %s",
                        (after, REINDEX_CHUNK),
                    )
                    chunk = await cur.fetchall()
                    if not chunk:
                        break
                    async with conn.cursor() as c:
                        await c.executemany(
                            "UPDATE leads SET email_hash = %s, phone_hash = %s WHERE id = %s",
                            [(*hasher.payload(payload), lid) for lid, payload in chunk],
                        )
                    done += len(chunk)
                    after = chunk[-1][0]
                await conn.execute(
                    "INSERT INTO settings (name, value) VALUES (%s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (INDEXED_SETTING, hasher.fingerprint),
                )
                event(log, "search_index_rebuilt", backend="postgres", leads=done)
        self.search = hasher

    async def close(self) -> None:
        await self._writer.stop()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def ping(self) -> None:
        if not self._writer.running:
            raise StoreUnavailable("the PostgreSQL writer is not running")
        async with self._connection(wait=min(self.timeout, 2.0)) as conn:
            await conn.execute("SELECT 1")

    # ------------------------------------------------------------------ intake

    async def ingest(
        self,
        leads: Sequence[LeadIn],
        destinations: Sequence[str],
        quarantine: Sequence[QuarantineIn],
        now: float,
    ) -> IngestResult:
        return await self._writer.ingest(leads, destinations, quarantine, now)

    # ------------------------------------------------------------------ delivery

    async def claim(
        self, *, destination: str, limit: int, lease_seconds: float, now: float
    ) -> list[Claim]:
        token = uuid.uuid4().hex
        async with self._connection() as conn:
            cur = await conn.execute(
                CLAIM,
                (now + lease_seconds, token, lease_seconds, destination, now, limit),
            )
            rows = await cur.fetchall()
        return [
            Claim(did, lid, destination, attempts, created, token, payload, received or 0.0)
            for did, lid, attempts, created, payload, received in rows
        ]

    async def finish(self, outcomes: Sequence[Outcome]) -> list[bool]:
        if not outcomes:
            return []
        # One statement for the whole batch. The same (delivery, token) twice is
        # applied once, like the second of two sequential updates would find the
        # token already cleared.
        unique: dict[tuple[int, str], Outcome] = {}
        for o in outcomes:
            unique.setdefault((o.delivery_id, o.lease_token), o)
        rows = [
            (
                *outcome_values(o),
                o.started_at,
                o.duration,
                o.attempt_outcome,
                o.count_attempt,
            )
            for _, o in sorted(unique.items())
        ]
        columns = [list(column) for column in zip(*rows, strict=True)]
        for i in _FINISH_FLOATS:  # binary arrays take one element type: no int among floats
            columns[i] = [None if v is None else float(v) for v in columns[i]]
        async with self._connection() as conn, conn.transaction():
            cur = await conn.execute(
                "WITH o AS (SELECT * FROM unnest(%b::bigint[], %b::text[], %b::text[], "
                "%b::int[], %b::float8[], %b::text[], %b::int[], %b::text[], %b::float8[], "
                "%b::float8[], %b::float8[], %b::float8[], %b::text[], %b::bool[]) "
                "AS o (id, tok, st, inc, nxt, err, code, rid, dat, upd, sa, dur, out, ca)), "
                "u AS (UPDATE deliveries d SET status = o.st, attempts = d.attempts + o.inc, "
                "next_attempt_at = o.nxt, lease_token = NULL, last_error = o.err, "
                "last_status_code = o.code, remote_id = coalesce(o.rid, d.remote_id), "
                "delivered_at = coalesce(o.dat, d.delivered_at), updated_at = o.upd "
                "FROM o WHERE d.id = o.id AND d.lease_token = o.tok "
                "RETURNING d.id, o.tok, d.lead_id, d.destination, d.attempts), "
                "a AS (INSERT INTO attempts (delivery_id, lead_id, destination, number, "
                "started_at, duration, outcome, error, status_code, remote_id) "
                "SELECT u.id, u.lead_id, u.destination, "
                "CASE WHEN o.ca THEN u.attempts ELSE u.attempts + 1 END, "
                "o.sa, o.dur, o.out, o.err, o.code, o.rid "
                "FROM u JOIN o ON o.id = u.id AND o.tok = u.tok) "
                "SELECT id, tok FROM u",
                columns,
            )
            applied = {(r[0], r[1]) for r in await cur.fetchall()}
        result = []
        for o in outcomes:
            key = (o.delivery_id, o.lease_token)
            result.append(key in applied)
            applied.discard(key)
        return result

    async def release(self, leases: Sequence[tuple[int, str]], now: float) -> int:
        if not leases:
            return 0
        async with self._connection() as conn:
            cur = await conn.execute(
                "UPDATE deliveries d SET next_attempt_at = %s, lease_token = NULL "
                "FROM unnest(%s::bigint[], %s::text[]) AS r (id, tok) "
                "WHERE d.id = r.id AND d.lease_token = r.tok AND d.status = 'pending'",
                (now, [i for i, _ in leases], [t for _, t in leases]),
            )
            return int(cur.rowcount)

    async def replay_part(
        self, which: ReplayFilter, *, now: float, after: Any, limit: int
    ) -> tuple[ReplayResult, Any]:
        # The same parts as SQLite's (bridge.store.sqlite_writes.replay_part).
        where, params = _filters(lead_id=which.lead_id, destination=which.destination)
        cursor: Any = None
        async with self._connection() as conn, conn.transaction():
            if which.lead_id is not None:
                if which.dead_only:
                    where.append(sql.SQL("status = 'dead'"))
                query = sql.SQL("SELECT id, status FROM deliveries WHERE {} FOR UPDATE")
                cur = await conn.execute(query.format(sql.SQL(" AND ").join(where)), params)
                rows = await cur.fetchall()
            elif which.dead_only:
                where.append(sql.SQL("status = 'dead'"))
                cond = sql.SQL(" AND ").join(where)
                if after is None:
                    query = sql.SQL("SELECT max(updated_at) FROM deliveries WHERE {}")
                    cur = await conn.execute(query.format(cond), params)
                    row = await cur.fetchone()
                    after = row[0] if row else None
                query = sql.SQL(
                    "SELECT id, status FROM deliveries WHERE {} AND updated_at <= %s "
                    "LIMIT %s FOR UPDATE SKIP LOCKED"
                )
                cur = await conn.execute(query.format(cond), [*params, after, limit])
                rows = await cur.fetchall()
                cursor = after if len(rows) == limit else None
            else:
                cur = await conn.execute(
                    "SELECT id, status, destination FROM deliveries WHERE id > %s "
                    "ORDER BY id LIMIT %s FOR UPDATE",
                    (after or 0, limit),
                )
                examined = await cur.fetchall()
                rows = [(i, st) for i, st, d in examined if which.destination in (None, d)]
                cursor = examined[-1][0] if len(examined) == limit else None
            ids, result = replay_choice(rows, which.force)
            if ids:
                await conn.execute(
                    "UPDATE deliveries SET status = 'pending', next_attempt_at = %s, "
                    "lease_token = NULL, created_at = %s, updated_at = %s WHERE id = ANY(%s)",
                    (now, now, now, ids),
                )
        return result, cursor

    async def add_deliveries(self, lead_id: str, destinations: Sequence[str], now: float) -> int:
        if not destinations:
            return 0
        async with self._connection() as conn:
            cur = await conn.execute(
                "INSERT INTO deliveries (lead_id, destination, status, created_at, "
                "next_attempt_at, updated_at) SELECT l.id, d, 'pending', %s, %s, %s "
                "FROM leads l, unnest(%s::text[]) AS d WHERE l.id = %s "
                "ON CONFLICT (lead_id, destination) DO NOTHING",
                (now, now, now, list(destinations), lead_id),
            )
            return int(cur.rowcount)
