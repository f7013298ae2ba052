"""SQLite store: one process, zero setup.

All writes go through one writer thread that commits whatever has queued up
since its last commit in a single transaction ("group commit", see ``_write``
and ``_run_writer``): with ``synchronous=FULL`` each commit costs an fsync, so
batching concurrent requests is what makes durable intake fast, and SQLite
releases the GIL while it works, so the event loop keeps serving meanwhile.
Intake's writes commit first and apart from delivery work. If a batch fails,
its operations are retried one per transaction, so one failing operation does
not fail its neighbours. WAL checkpoints run in a background thread. Reads run
in threads on per-thread connections (WAL lets them run beside the writer).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from bridge.errors import StoreError, StoreUnavailable
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
    payload_has_email,
)

log = logging.getLogger("lead_bridge.store")

T = TypeVar("T")

MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE leads (
            id TEXT PRIMARY KEY,
            received_at REAL NOT NULL,
            created TEXT,
            url TEXT,
            payload TEXT,
            purged_at REAL
        )""",
        "CREATE INDEX leads_received ON leads (received_at)",
        """CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY,
            lead_id TEXT NOT NULL REFERENCES leads (id) ON DELETE CASCADE,
            destination TEXT NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            next_attempt_at REAL,
            lease_token TEXT,
            last_error TEXT,
            last_status_code INTEGER,
            remote_id TEXT,
            delivered_at REAL,
            updated_at REAL NOT NULL,
            UNIQUE (lead_id, destination)
        )""",
        # Partial index: the claim query reads only due rows of one destination, so
        # its cost does not grow with the number of delivered rows or the backlog.
        """CREATE INDEX deliveries_due ON deliveries (destination, next_attempt_at)
            WHERE status = 'pending'""",
        # No index on updated_at: every index costs each intake insert, and operator
        # listings can afford a scan in a reader thread.
        """CREATE TABLE attempts (
            id INTEGER PRIMARY KEY,
            delivery_id INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
            lead_id TEXT NOT NULL,
            destination TEXT NOT NULL,
            number INTEGER NOT NULL,
            started_at REAL NOT NULL,
            duration REAL NOT NULL,
            outcome TEXT NOT NULL,
            error TEXT,
            status_code INTEGER,
            remote_id TEXT
        )""",
        "CREATE INDEX attempts_lead ON attempts (lead_id)",
        """CREATE TABLE quarantine (
            id INTEGER PRIMARY KEY,
            received_at REAL NOT NULL,
            reason TEXT NOT NULL,
            lead_id TEXT,
            item_index INTEGER,
            raw TEXT NOT NULL
        )""",
    ],
]


def sqlite_path(url: str) -> Path:
    """``sqlite:///relative.db`` or ``sqlite:////absolute.db`` -> a path."""
    rest = url.removeprefix("sqlite:///")
    if not rest:
        raise StoreError(f"no database file in storage url {url!r}")
    return Path(rest)


class _Op:
    __slots__ = ("fn", "future", "ingest", "loop")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        future: asyncio.Future[Any],
        loop: asyncio.AbstractEventLoop,
        ingest: _Ingest | None = None,
    ) -> None:
        self.fn = fn
        self.future = future
        self.loop = loop
        self.ingest = ingest


class _Ingest:
    __slots__ = ("delivery_params", "destinations", "leads", "now", "params", "quarantine")

    def __init__(
        self,
        leads: Sequence[LeadIn],
        destinations: Sequence[str],
        quarantine: Sequence[QuarantineIn],
        now: float,
    ) -> None:
        self.leads = leads
        self.destinations = destinations
        self.quarantine = quarantine
        self.now = now
        # Flattened here, on the event loop, so the writer thread (the commit's
        # critical path) spends its time in SQLite rather than in Python.
        self.params = [
            v for lead in leads for v in (lead.id, now, lead.created, lead.url, lead.payload)
        ]
        self.delivery_params = [
            v for lead in leads for d in destinations for v in (lead.id, d, now, now, now)
        ]


_LEAD_ROW = "(?, ?, ?, ?, ?)"
_DELIVERY_ROW = "(?, ?, 'pending', ?, ?, ?)"
# Claims and outcomes committed per transaction by the writer, between intake's commits.
ENGINE_CHUNK = 32
LEAD_CHUNK = 500  # rows per statement (5 parameters each; SQLite allows 32,766)
DELIVERY_CHUNK = 1000


@functools.lru_cache(maxsize=64)
def _marks(row: str, count: int) -> str:
    return ",".join([row] * count)


def _run_ingests(conn: sqlite3.Connection, requests: Sequence[_Ingest]) -> list[IngestResult]:
    """Store the leads of several requests with a few multi-row statements.

    Concurrent webhook requests committed together share statements too, not
    only the fsync. The first occurrence of an id wins; later ones, in the same
    request or another, are duplicates. This runs in the writer thread, the
    commit's critical path: parameters were flattened on the event loop
    (``_Ingest``), so here it is mostly list concatenation and SQLite.
    """
    inserted: set[str] = set()
    params: list[Any] = []
    for req in requests:
        params += req.params
    rows = len(params) // 5
    for start in range(0, rows, LEAD_CHUNK):
        count = min(LEAD_CHUNK, rows - start)
        cursor = conn.execute(
            "INSERT INTO leads (id, received_at, created, url, payload) "  # noqa: S608
            f"VALUES {_marks(_LEAD_ROW, count)} ON CONFLICT (id) DO NOTHING RETURNING id",
            params[start * 5 : (start + count) * 5],
        )
        inserted.update(row[0] for row in cursor)
    results = []
    delivery_params: list[Any] = []
    quarantined: list[tuple[Any, ...]] = []
    for req in requests:
        result = IngestResult()
        for lead in req.leads:
            if lead.id in inserted:
                inserted.discard(lead.id)
                result.accepted.append(lead.id)
            else:
                result.duplicates.append(lead.id)
        if not result.duplicates:
            delivery_params += req.delivery_params  # the common case: all new
        else:
            now = req.now
            delivery_params += [
                v
                for lid in result.accepted
                for d in req.destinations
                for v in (lid, d, now, now, now)
            ]
        quarantined += [(req.now, q.reason, q.lead_id, q.item_index, q.raw) for q in req.quarantine]
        results.append(result)
    rows = len(delivery_params) // 5
    for start in range(0, rows, DELIVERY_CHUNK):
        count = min(DELIVERY_CHUNK, rows - start)
        conn.execute(
            "INSERT INTO deliveries (lead_id, destination, status, created_at, "  # noqa: S608
            f"next_attempt_at, updated_at) VALUES {_marks(_DELIVERY_ROW, count)}",
            delivery_params[start * 5 : (start + count) * 5],
        )
    if quarantined:
        conn.executemany(
            "INSERT INTO quarantine (received_at, reason, lead_id, item_index, raw) "
            "VALUES (?, ?, ?, ?, ?)",
            quarantined,
        )
    return results


def _settle_all(items: list[tuple[_Op, Any, BaseException | None]]) -> None:
    for op, result, error in items:
        _settle(op.future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled; the write happened anyway
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


# Rows per statement: 10 parameters each stays far below SQLite's variable limit.
_FINISH_CHUNK = 500


def _finish(outcomes: Sequence[Outcome], conn: sqlite3.Connection) -> list[bool]:
    """Apply outcomes with one UPDATE ... FROM (VALUES ...) and one multi-row INSERT
    per chunk, not two statements per outcome: at thousands of deliveries a
    second, the writer thread's per-statement cost is what delays intake's commits.

    Fenced: a row is updated only while it still holds the outcome's lease token.
    The same (delivery, token) twice is applied once, as a second sequential
    update would find the token already cleared.
    """
    applied: dict[tuple[int, str], bool] = {}
    unique: dict[tuple[int, str], Outcome] = {}
    for o in outcomes:
        unique.setdefault((o.delivery_id, o.lease_token), o)
    # RETURNING names the row, not the token that matched: outcomes for the same
    # delivery under different tokens go to successive statements, in order.
    passes: list[list[Outcome]] = []
    rank: dict[int, int] = {}
    for o in unique.values():
        n = rank.get(o.delivery_id, 0)
        rank[o.delivery_id] = n + 1
        if n == len(passes):
            passes.append([])
        passes[n].append(o)
    chunks = [
        todo[start : start + _FINISH_CHUNK]
        for todo in passes
        for start in range(0, len(todo), _FINISH_CHUNK)
    ]
    for chunk in chunks:
        marks = ",".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
        params: list[Any] = []
        for o in chunk:
            params += (
                o.delivery_id,
                o.lease_token,
                o.status,
                1 if o.count_attempt else 0,
                o.next_attempt_at if o.status == "pending" else None,
                o.error,
                o.status_code,
                o.remote_id,
                o.started_at + o.duration if o.status == "delivered" else None,
                o.started_at + o.duration,
            )
        # VALUES columns are named column1..column10 by SQLite.
        rows = conn.execute(
            "UPDATE deliveries SET status = v.column3, attempts = attempts + v.column4, "  # noqa: S608
            "next_attempt_at = v.column5, lease_token = NULL, last_error = v.column6, "
            "last_status_code = v.column7, remote_id = coalesce(v.column8, remote_id), "
            "delivered_at = coalesce(v.column9, delivered_at), updated_at = v.column10 "
            f"FROM (VALUES {marks}) AS v "
            "WHERE deliveries.id = v.column1 AND deliveries.lease_token = v.column2 "
            "RETURNING deliveries.id, deliveries.lead_id, deliveries.destination, "
            "deliveries.attempts",
            params,
        ).fetchall()
        done = {row[0]: row for row in rows}
        attempts: list[Any] = []
        for o in chunk:
            row = done.get(o.delivery_id)
            applied[(o.delivery_id, o.lease_token)] = row is not None
            if row is None:
                continue
            _, lead_id, destination, number = row
            attempts += (
                o.delivery_id,
                lead_id,
                destination,
                number if o.count_attempt else number + 1,
                o.started_at,
                o.duration,
                o.attempt_outcome,
                o.error,
                o.status_code,
                o.remote_id,
            )
        if attempts:
            marks = ",".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * (len(attempts) // 10))
            conn.execute(
                "INSERT INTO attempts (delivery_id, lead_id, destination, number, "  # noqa: S608
                "started_at, duration, outcome, error, status_code, remote_id) "
                f"VALUES {marks}",
                attempts,
            )
    # A duplicate outcome in the same call finds its lease already used.
    seen: set[tuple[int, str]] = set()
    result = []
    for o in outcomes:
        key = (o.delivery_id, o.lease_token)
        result.append(applied[key] and key not in seen)
        seen.add(key)
    return result


class SQLiteStore(Store):
    checkpoint_interval = 1.0

    def __init__(self, url: str, *, synchronous: str = "FULL", max_batch: int = 2000) -> None:
        self.path = sqlite_path(url)
        self.synchronous = synchronous
        self.max_batch = max_batch
        self._conn: sqlite3.Connection | None = None
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._checkpointer: threading.Thread | None = None
        self._checkpoint_stop = threading.Event()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = True

    # ------------------------------------------------------------------ plumbing

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        # Erased data must not linger in free pages (see `lead-bridge erase`).
        conn.execute("PRAGMA secure_delete=ON")
        conn.execute("PRAGMA cache_size=-65536")  # 64 MiB
        return conn

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = self._connect()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open SQLite database {self.path}: {exc}") from exc
        self._migrate(conn)
        # Checkpoints copy the WAL into the database file and fsync it: done by a
        # background thread (SQLite releases the GIL), not inside intake's commits.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        self._conn = conn
        self._closed = False
        self._writer = threading.Thread(target=self._run_writer, name="sqlite-writer", daemon=True)
        self._writer.start()
        self._checkpoint_stop.clear()
        self._checkpointer = threading.Thread(
            target=self._run_checkpointer, name="sqlite-checkpointer", daemon=True
        )
        self._checkpointer.start()

    def _run_checkpointer(self) -> None:
        conn = self._connect()
        try:
            while not self._checkpoint_stop.wait(self.checkpoint_interval):
                try:
                    # PASSIVE never blocks the writer nor waits for readers.
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:
                    log.warning("event=checkpoint_failed backend=sqlite error=%s", exc)
        finally:
            conn.close()

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            current = row[0] or 0
            if current > len(MIGRATIONS):
                raise StoreError(
                    f"database schema version {current} is newer than this lead-bridge "
                    f"({len(MIGRATIONS)}); upgrade lead-bridge"
                )
            for version in range(current + 1, len(MIGRATIONS) + 1):
                for statement in MIGRATIONS[version - 1]:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
                log.info("event=migrated backend=sqlite version=%d", version)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._queue.put(None)  # after every queued write
            await asyncio.to_thread(self._writer.join)
            self._writer = None
        self._checkpoint_stop.set()
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.join)
            self._checkpointer = None
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()
        with self._readers_lock:
            for reader in self._readers:
                reader.close()
            self._readers.clear()

    async def _write(
        self, fn: Callable[[sqlite3.Connection], T], ingest: _Ingest | None = None
    ) -> T:
        """Queue a write; it commits together with every write queued meanwhile.

        Group commit: the writer thread takes everything queued, runs it in one
        transaction and commits (SQLite releases the GIL while it works and
        fsyncs, so the event loop keeps serving requests on the other core), then
        hands the results back with one loop callback and takes the next batch at
        once. Batches grow with the load, so each fsync carries many requests.
        """
        if self._closed:
            raise StoreUnavailable("the store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Op(fn, future, loop, ingest))
        return await future

    def _run_writer(self) -> None:
        """Intake first: each round commits every queued ingest in one transaction
        (a webhook's 200 waits for it), then at most ENGINE_CHUNK other operations
        (claims, outcomes) in another, so intake never waits behind a large batch
        of delivery work. Whatever queues up meanwhile forms the next round."""
        get, get_nowait = self._queue.get, self._queue.get_nowait
        others: collections.deque[_Op] = collections.deque()
        stop = False
        while True:
            ingests: list[_Op] = []
            if not others and not stop:
                first = get()
                if first is None:
                    return
                (ingests if first.ingest is not None else others).append(first)
            while not stop and len(ingests) + len(others) < self.max_batch:
                try:
                    op = get_nowait()
                except queue.Empty:
                    break
                if op is None:
                    stop = True
                    break
                (ingests if op.ingest is not None else others).append(op)
            if ingests:
                self._commit_and_answer(ingests)
            if others:
                chunk = [others.popleft() for _ in range(min(ENGINE_CHUNK, len(others)))]
                self._commit_and_answer(chunk)
            if stop and not others:
                return

    def _commit_and_answer(self, batch: list[_Op]) -> None:
        try:
            outcomes = self._execute_batch(batch)
        except BaseException as exc:  # nothing was committed
            outcomes = [(None, StoreUnavailable(f"commit failed: {exc}"))] * len(batch)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Op, Any, Any]]] = {}
        for op, (result, error) in zip(batch, outcomes, strict=True):
            by_loop.setdefault(op.loop, []).append((op, result, error))
        for loop, items in by_loop.items():
            # A closed loop means nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle_all, items)

    def _execute_batch(self, batch: list[_Op]) -> list[tuple[Any, BaseException | None]]:
        """Runs in the writer thread: one transaction for the whole batch."""
        conn = self._conn
        if conn is None:
            return [(None, StoreUnavailable("the store is closed"))] * len(batch)
        try:
            conn.execute("BEGIN IMMEDIATE")
            ingests = [op for op in batch if op.ingest is not None]
            merged: dict[int, Any] = {}
            if len(ingests) > 1:
                stored = _run_ingests(conn, [op.ingest for op in ingests if op.ingest])
                merged = {id(op): r for op, r in zip(ingests, stored, strict=True)}
            results = [merged[id(op)] if id(op) in merged else op.fn(conn) for op in batch]
            conn.execute("COMMIT")
        except Exception as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if len(batch) > 1:
                # Find the culprit: one transaction per operation, so one failing
                # operation does not fail its neighbours.
                return [self._execute_batch([op])[0] for op in batch]
            if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError) and not isinstance(
                exc, sqlite3.IntegrityError
            ):
                log.error("event=commit_failed backend=sqlite error=%s", type(exc).__name__)
                return [(None, StoreUnavailable(f"commit failed: {exc}"))]
            if isinstance(exc, StoreError):
                return [(None, exc)]
            return [(None, StoreError(f"{type(exc).__name__}: {exc}"))]
        return [(result, None) for result in results]

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreUnavailable("the store is closed")

        def run() -> T:
            try:
                return fn(self._reader())
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"read failed: {exc}") from exc

        return await asyncio.to_thread(run)

    async def ping(self) -> None:
        if self._closed or self._conn is None:
            raise StoreUnavailable("the SQLite store is closed")
        await self._read(lambda c: c.execute("SELECT 1").fetchone())

    # ------------------------------------------------------------------ intake

    async def ingest(
        self,
        leads: Sequence[LeadIn],
        destinations: Sequence[str],
        quarantine: Sequence[QuarantineIn],
        now: float,
    ) -> IngestResult:
        request = _Ingest(leads, destinations, quarantine, now)
        return await self._write(lambda conn: _run_ingests(conn, [request])[0], request)

    # ------------------------------------------------------------------ delivery

    async def claim(
        self, *, destination: str, limit: int, lease_seconds: float, now: float
    ) -> list[Claim]:
        token = uuid.uuid4().hex

        def op(conn: sqlite3.Connection) -> list[Claim]:
            rows = conn.execute(
                "UPDATE deliveries SET next_attempt_at = ?, lease_token = ? "
                "WHERE id IN (SELECT id FROM deliveries WHERE status = 'pending' "
                "AND destination = ? AND next_attempt_at <= ? "
                "ORDER BY next_attempt_at LIMIT ?) "
                "RETURNING id, lead_id, attempts, created_at",
                (now + lease_seconds, token, destination, now, limit),
            ).fetchall()
            if not rows:
                return []
            ids = list({r[1] for r in rows})
            leads: dict[str, tuple[str | None, float]] = {}
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for lid, payload, received in conn.execute(
                    f"SELECT id, payload, received_at FROM leads WHERE id IN ({marks})",  # noqa: S608
                    chunk,
                ):
                    leads[lid] = (payload, received)
            claims = []
            for did, lid, attempts, created in sorted(rows):
                payload, received = leads.get(lid, (None, 0.0))
                claims.append(
                    Claim(did, lid, destination, attempts, created, token, payload, received)
                )
            return claims

        return await self._write(op)

    async def finish(self, outcomes: Sequence[Outcome]) -> list[bool]:
        if not outcomes:
            return []
        return await self._write(functools.partial(_finish, outcomes))

    async def release(self, leases: Sequence[tuple[int, str]], now: float) -> int:
        if not leases:
            return 0

        def op(conn: sqlite3.Connection) -> int:
            count = 0
            for did, token in leases:
                count += conn.execute(
                    "UPDATE deliveries SET next_attempt_at = ?, lease_token = NULL "
                    "WHERE id = ? AND lease_token = ? AND status = 'pending'",
                    (now, did, token),
                ).rowcount
            return count

        return await self._write(op)

    async def replay(
        self,
        *,
        now: float,
        lead_id: str | None = None,
        destination: str | None = None,
        dead_only: bool = False,
        force: bool = False,
    ) -> ReplayResult:
        def op(conn: sqlite3.Connection) -> ReplayResult:
            where, params = ["1 = 1"], []
            if lead_id is not None:
                where.append("lead_id = ?")
                params.append(lead_id)
            if destination is not None:
                where.append("destination = ?")
                params.append(destination)
            if dead_only:
                where.append("status = 'dead'")
            cond = " AND ".join(where)
            result = ReplayResult()
            rows = conn.execute(
                f"SELECT id, status FROM deliveries WHERE {cond}",  # noqa: S608
                params,
            ).fetchall()
            if not rows:
                result.not_found = 1
                return result
            ids = []
            for did, status in rows:
                if status == "delivered" and not force:
                    result.refused_delivered += 1
                elif status == "pending":
                    continue
                else:
                    ids.append(did)
            for did in ids:
                conn.execute(
                    "UPDATE deliveries SET status = 'pending', next_attempt_at = ?, "
                    "lease_token = NULL, created_at = ?, updated_at = ? WHERE id = ?",
                    (now, now, now, did),
                )
            result.requeued = len(ids)
            return result

        return await self._write(op)

    async def add_deliveries(self, lead_id: str, destinations: Sequence[str], now: float) -> int:
        def op(conn: sqlite3.Connection) -> int:
            count = 0
            for dest in destinations:
                count += conn.execute(
                    "INSERT INTO deliveries (lead_id, destination, status, created_at, "
                    "next_attempt_at, updated_at) SELECT id, ?, 'pending', ?, ?, ? "
                    "FROM leads WHERE id = ? ON CONFLICT (lead_id, destination) DO NOTHING",
                    (dest, now, now, now, lead_id),
                ).rowcount
            return count

        return await self._write(op)

    # ------------------------------------------------------------------ queries

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

    async def purge_payloads(self, before: float) -> int:
        def op(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE leads SET payload = NULL, purged_at = ? WHERE payload IS NOT NULL "
                "AND received_at < ? AND NOT EXISTS (SELECT 1 FROM deliveries d "
                "WHERE d.lead_id = leads.id AND d.status NOT IN ('delivered', 'skipped')) "
                # A lead never given a delivery (no destination then) is not delivered.
                "AND EXISTS (SELECT 1 FROM deliveries d WHERE d.lead_id = leads.id)",
                (time.time(), before),
            ).rowcount

        return await self._write(op)

    async def erase(self, *, email: str | None = None, lead_id: str | None = None) -> EraseReport:
        def op(conn: sqlite3.Connection) -> EraseReport:
            report = EraseReport()
            ids: set[str] = set()
            if lead_id is not None:
                ids.add(lead_id)
            if email is not None:
                needle = email.strip().lower()
                for lid, payload in conn.execute(
                    "SELECT id, payload FROM leads WHERE payload IS NOT NULL "
                    "AND instr(lower(payload), ?) > 0",
                    (needle,),
                ):
                    if payload_has_email(payload, needle):
                        ids.add(lid)
            for lid in sorted(ids):
                report.attempts += conn.execute(
                    "DELETE FROM attempts WHERE lead_id = ?", (lid,)
                ).rowcount
                report.deliveries += conn.execute(
                    "DELETE FROM deliveries WHERE lead_id = ?", (lid,)
                ).rowcount
                gone = conn.execute("DELETE FROM leads WHERE id = ?", (lid,)).rowcount
                report.leads += gone
                if gone:
                    report.lead_ids.append(lid)
                report.quarantine += conn.execute(
                    "DELETE FROM quarantine WHERE lead_id = ?", (lid,)
                ).rowcount
            if email is not None:
                report.quarantine += conn.execute(
                    "DELETE FROM quarantine WHERE instr(lower(raw), ?) > 0",
                    (email.strip().lower(),),
                ).rowcount
                report.attempts += conn.execute(
                    "DELETE FROM attempts WHERE instr(lower(coalesce(error, '')), ?) > 0",
                    (email.strip().lower(),),
                ).rowcount
                # Another lead's delivery can quote the address in its stored error
                # (a CRM echoing a conflict): keep the row, drop the text.
                conn.execute(
                    "UPDATE deliveries SET last_error = '[erased: contained personal data]' "
                    "WHERE instr(lower(coalesce(last_error, '')), ?) > 0",
                    (email.strip().lower(),),
                )
            return report

        report = await self._write(op)
        # secure_delete zeroes the freed pages; the checkpoint moves them out of the WAL.
        await self._write(lambda c: None)
        await asyncio.to_thread(self._checkpoint)
        return report

    def _checkpoint(self) -> None:
        conn = self._connect()
        try:
            # busy=1 means a reader pinned an old snapshot and the WAL (which may
            # still hold erased bytes) was not emptied: say so instead of claiming success.
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.close()
        if busy:
            raise StoreError(
                "the data was erased but the WAL checkpoint was blocked by a reader; "
                "run the erase again to remove the old bytes from the -wal file"
            )
