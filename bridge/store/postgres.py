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
* Every psycopg error is translated in :func:`_translate`: connection problems,
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
import re
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

from bridge.errors import ConfigError, StoreError, StoreUnavailable
from bridge.logs import event
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
    ReplayResult,
    Store,
    StoreStatus,
    delivery_from_row,
    outcome_values,
    quarantine_cutoff_query,
    quarantine_drop_condition,
    replay_choice,
    versions_to_apply,
)
from bridge.store.erasure import ERASED_ERROR, ErasePart, ErasePlan, PlanBuilder
from bridge.store.postgres_intake import GroupWriter
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


# Leads re-hashed per statement batch when the search index is rebuilt.
REINDEX_CHUNK = 5000

_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_SEARCH_PATH_RE = re.compile(r"-c\s*search_path=([^\s,]+)")


def _translate(exc: psycopg.Error) -> StoreError:
    """The one place psycopg errors become Lead Bridge errors.

    Connection loss, pool timeouts, server shutdown, deadlocks and serialization
    failures are all "try again later": ``StoreUnavailable``. Anything else is a
    bug or bad data: ``StoreError`` with the server's primary message only (the
    DETAIL line can quote row values).
    """
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return StoreUnavailable(f"PostgreSQL unavailable: {type(exc).__name__}: {exc}")
    primary = exc.diag.message_primary if exc.diag else None
    return StoreError(f"PostgreSQL error: {type(exc).__name__}: {primary or exc}")


def _schema_from(url: str, schema: str | None) -> tuple[str, str | None]:
    """Return the conninfo to connect with and the schema to create (if any)."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"invalid PostgreSQL url: {exc}", path="storage.url") from exc
    options = str(params.get("options") or "")
    if schema is None:
        found = _SEARCH_PATH_RE.findall(options)
        schema = found[-1] if found else None
    elif schema:
        options = f"{options} -csearch_path={schema}".strip()
    if schema is not None and not _SCHEMA_RE.match(schema):
        raise ConfigError(
            f"invalid PostgreSQL schema name {schema!r}: use letters, digits and _",
            path="storage.url",
        )
    extra: dict[str, Any] = {"options": options} if options else {}
    params.setdefault("connect_timeout", "5")
    params.setdefault("application_name", "lead-bridge")
    return make_conninfo(make_conninfo("", **params), **extra), schema


class PostgresStore(Store):
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
            check=AsyncConnectionPool.check_connection,
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

    @asynccontextmanager
    async def _connection(self, wait: float | None = None) -> AsyncIterator[Any]:
        if self._pool is None:
            raise StoreUnavailable("the store is closed")
        try:
            async with self._pool.connection(timeout=wait) as conn:
                yield conn
        except psycopg.Error as exc:
            raise _translate(exc) from exc

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
        columns = tuple(list(column) for column in zip(*rows, strict=True))
        async with self._connection() as conn, conn.transaction():
            cur = await conn.execute(
                "WITH o AS (SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], "
                "%s::int[], %s::float8[], %s::text[], %s::int[], %s::text[], %s::float8[], "
                "%s::float8[], %s::float8[], %s::float8[], %s::text[], %s::bool[]) "
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
        self,
        *,
        now: float,
        lead_id: str | None,
        destination: str | None,
        dead_only: bool,
        force: bool,
        after: Any,
        limit: int,
    ) -> tuple[ReplayResult, Any]:
        # The same parts as SQLite's (bridge.store.sqlite_writes.replay_part).
        where, params = _filters(lead_id=lead_id, destination=destination)
        cursor: Any = None
        async with self._connection() as conn, conn.transaction():
            if lead_id is not None:
                if dead_only:
                    where.append(sql.SQL("status = 'dead'"))
                query = sql.SQL("SELECT id, status FROM deliveries WHERE {} FOR UPDATE")
                cur = await conn.execute(query.format(sql.SQL(" AND ").join(where)), params)
                rows = await cur.fetchall()
            elif dead_only:
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
                rows = [(i, st) for i, st, d in examined if destination in (None, d)]
                cursor = examined[-1][0] if len(examined) == limit else None
            ids, result = replay_choice(rows, force)
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

    # ------------------------------------------------------------------ queries

    async def _fetch(self, query: Any, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self._connection() as conn:
            cur = await conn.execute(query, params)
            return list(await cur.fetchall())

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

    # ------------------------------------------------------------------ data protection

    async def purge_payloads_part(
        self, before: float, *, after: Any, limit: int
    ) -> tuple[int, Any]:
        # The next `limit` leads received before `before`, by (received_at, id)
        # from the cursor; one statement, so one short transaction.
        start, start_id = after if after is not None else (float("-inf"), "")
        rows = await self._fetch(
            "WITH part AS (SELECT received_at, id FROM leads WHERE received_at < %s "
            "AND received_at >= %s AND (received_at, id) > (%s, %s) "
            "ORDER BY received_at, id LIMIT %s), "
            "purged AS (UPDATE leads SET payload = NULL, email_hash = NULL, phone_hash = NULL, "
            "purged_at = %s FROM part WHERE leads.id = part.id AND leads.payload IS NOT NULL "
            "AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.lead_id = leads.id "
            "AND d.status NOT IN ('delivered', 'skipped')) "
            # A lead never given a delivery (no destination then) is not delivered.
            "AND EXISTS (SELECT 1 FROM deliveries d WHERE d.lead_id = leads.id) RETURNING 1) "
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

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        rows = await self._fetch(_placeholders(sql), params)  # type: ignore[arg-type]
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]

    async def execute(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        counts = []
        async with self._connection() as conn, conn.transaction():
            for query, params in statements:
                cur = await conn.execute(_placeholders(query), params)  # type: ignore[arg-type]
                counts.append(int(cur.rowcount))
        return counts

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

            async def run(query: str, *params: Any) -> int:
                return int((await conn.execute(query, params)).rowcount)  # type: ignore[arg-type]

            report.attempts = await run("DELETE FROM attempts WHERE lead_id = ANY(%s)", ids)
            report.attempts += await run(
                "DELETE FROM attempts WHERE id = ANY(%s)", list(part.attempt_ids)
            )
            report.deliveries = await run("DELETE FROM deliveries WHERE lead_id = ANY(%s)", ids)
            cur = await conn.execute("DELETE FROM leads WHERE id = ANY(%s) RETURNING id", (ids,))
            report.lead_ids = sorted(r[0] for r in await cur.fetchall())
            report.leads = len(report.lead_ids)
            report.quarantine = await run(
                "DELETE FROM quarantine WHERE id = ANY(%s)", list(part.quarantine_ids)
            )
            report.errors_scrubbed = await run(
                "UPDATE deliveries SET last_error = %s WHERE id = ANY(%s)",
                ERASED_ERROR,
                list(part.scrub_ids),
            )
        return report


class _Settings:
    """The settings table through one connection, for search_key_plan_async."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def get(self, name: str) -> str | None:
        cur = await self.conn.execute("SELECT value FROM settings WHERE name = %s", (name,))
        row = await cur.fetchone()
        return None if row is None else str(row[0])

    async def put_new(self, name: str, value: str) -> None:
        await self.conn.execute(
            "INSERT INTO settings (name, value) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
            (name, value),
        )

    async def delete(self, name: str) -> None:
        await self.conn.execute("DELETE FROM settings WHERE name = %s", (name,))


def _placeholders(query: str) -> str:
    """bridge.operations' ``?`` placeholders as psycopg's ``%s``."""
    return query.replace("%", "%%").replace("?", "%s")


def _filters(**equal: str | None) -> tuple[list[sql.Composable], list[Any]]:
    """``column = %s`` conditions for the values that are not None (columns are ours)."""
    where: list[sql.Composable] = [sql.SQL("true")]
    params: list[Any] = []
    for column, value in equal.items():
        if value is not None:
            where.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    return where, params
