"""Every write of the SQLite store, as a named operation on a connection.

They run in the writer process (:mod:`bridge.store.sqlite_writer`), so each one
is a plain function of picklable arguments, found by name in :data:`OPS`.
Intake's ``ingest`` operations are special: several of them committed together
share their statements (:func:`run_ingests`), not only the fsync.
"""

from __future__ import annotations

import functools
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from bridge.errors import StoreError
from bridge.leads import Batch, BodyResult, body_result, parse_body, quarantined_body
from bridge.store.base import (
    Claim,
    EraseReport,
    IngestResult,
    LeadIn,
    Outcome,
    ReplayResult,
    outcome_values,
    quarantine_drop_condition,
    replay_choice,
)
from bridge.store.erasure import ERASE_AFTER_LEADS, ERASE_BEFORE_LEADS, ERASE_LEADS, ERASED_ERROR
from bridge.store.search import INDEXED_ROWID, SearchHasher
from bridge.store.sql_shared import PURGE_SET, PURGEABLE

# Values per lead in an Ingest's flat ``rows``, in the order of the leads
# table's INSERT: id, received_at, created, url, payload. The search hashes are
# not among them: :func:`index_search` computes them in batches, off the commit
# path (bridge/store/search.py).
LEAD_FIELDS = 5

_LEAD_ROW = "(?, ?, ?, ?, ?)"
_DELIVERY_ROW = "(?, ?, 'pending', ?, ?, ?)"
STATEMENT_ROWS = 256  # rows per INSERT at most (SQLite allows 32,766 parameters)
# Leads one index_search transaction covers at most (the store's batches).
INDEX_BATCH = 2000
# Leads whose search values the writer keeps for the index at most (SearchBacklog;
# about 200 bytes each).
BACKLOG_LEADS = 50_000
# Rows per statement: 10 parameters each stays far below SQLite's variable limit.
_FINISH_CHUNK = 500
# Is any lead erased? Asked once per commit, so that the per-lead probe below
# runs only on databases that have tombstones at all (an erase, from this
# writer or another process, commits its tombstones before any later commit
# reads this).
_ANY_TOMBSTONE = "SELECT EXISTS (SELECT 1 FROM erased_leads)"
# Is one of the leads just inserted (rowid above the given one) tombstoned?
# CROSS JOIN pins the loop order: the new rows outside, a primary-key probe of
# the tombstones inside, however many tombstones there are.
_TOMBSTONED = (
    "SELECT 1 FROM leads l CROSS JOIN erased_leads e ON e.id = l.id WHERE l.rowid > ? LIMIT 1"
)


class Ingest:
    """One webhook request's leads, as the writer stores them.

    ``rows`` is flat, ``LEAD_FIELDS`` values per lead in the leads table's
    column order: the cheapest shape to pickle, and the writer only
    concatenates them into its statements' parameters. ``batch`` is set when
    the writer parsed the raw body itself (:func:`prepare_body`); ``search``
    then holds each lead's raw ``(email, phone)`` for the search index (see
    :class:`SearchBacklog`).
    """

    __slots__ = ("batch", "destinations", "now", "quarantine", "rows", "search")

    def __init__(
        self,
        rows: Sequence[Any],
        destinations: Sequence[str],
        quarantine: Sequence[tuple[str, str | None, int | None, str]],
        now: float,
        batch: Batch | None = None,
    ) -> None:
        self.rows = rows
        self.destinations = destinations
        self.quarantine = quarantine  # (reason, lead_id, item_index, raw)
        self.now = now
        self.batch = batch
        self.search: list[tuple[Any, Any]] | None = None

    def ids(self) -> Sequence[str]:
        return self.rows[::LEAD_FIELDS]

    def answer(self, stored: IngestResult) -> IngestResult | BodyResult:
        return stored if self.batch is None else body_result(self.batch, stored)


def lead_rows(leads: Sequence[LeadIn], now: float) -> list[Any]:
    """Leads as an Ingest's flat ``rows``."""
    return [v for lead in leads for v in (lead.id, now, lead.created, lead.url, lead.payload)]


def search_hasher(conn: sqlite3.Connection) -> SearchHasher | None:
    """The search key the writer indexes with on this connection (None: none yet)."""
    hasher: SearchHasher | None = getattr(conn, "search_hasher", None)
    return hasher


def prepare_body(body: bytes, destinations: Sequence[str], now: float) -> Ingest:
    """A raw webhook body as an Ingest: parsed and split here, in the writer
    process, with :func:`bridge.leads.parse_body` as intake would."""
    batch = parse_body(body)
    if batch.problem is not None:
        q = quarantined_body(body, batch.problem)
        return Ingest([], (), [(q.reason, None, None, q.raw)], now, batch)
    quarantine = [(q.reason, q.lead_id, q.item_index, q.raw) for q in batch.rejected]
    ingest = Ingest(lead_rows(batch.leads, now), destinations, quarantine, now, batch)
    # parse_body let only an object (or nothing) through as "data".
    ingest.search = [
        (data.get("email"), data.get("phone")) if (data := element.get("data")) else _NO_VALUES
        for element in batch.elements
    ]
    return ingest


_NO_VALUES = (None, None)


class SearchBacklog:
    """The raw search values of leads committed but not indexed yet, as the
    writer parsed them from their bodies: an index batch hashes these rather
    than parse each stored payload again. Kept in memory, in commit order, a
    bounded number: a lead not found here (stored by another process, before
    a restart, or beyond the bound) is indexed from its payload instead.
    """

    def __init__(self, limit: int = BACKLOG_LEADS) -> None:
        self.limit = limit
        self.leads = 0
        # (rowid of the first lead, the leads' ids, their (email, phone)), in rowid order
        self.chunks: list[tuple[int, Sequence[str], list[tuple[Any, Any]]]] = []

    def add(self, first: int, ids: Sequence[str], values: list[tuple[Any, Any]]) -> None:
        if self.leads < self.limit:
            self.chunks.append((first, ids, values))
            self.leads += len(ids)

    def take(self, after: int, upto: int) -> dict[int, tuple[str, Any, Any]]:
        """``rowid: (lead id, email, phone)`` for rowids in (after, upto]; what
        lies at or below ``upto`` is dropped."""
        found: dict[int, tuple[str, Any, Any]] = {}
        keep = []
        for chunk in self.chunks:
            first, ids, values = chunk
            for offset in range(max(0, after + 1 - first), min(len(ids), upto + 1 - first)):
                found[first + offset] = (ids[offset], *values[offset])
            if first + len(ids) - 1 > upto:
                keep.append(chunk)
        self.chunks = keep
        self.leads = sum(len(ids) for _, ids, _ in keep)
        return found


@functools.lru_cache(maxsize=64)
def _marks(row: str, count: int) -> str:
    return ",".join([row] * count)


def statement_sizes(rows: int, cap: int) -> list[int]:
    """Rows per statement for ``rows`` rows: powers of two, largest first, none
    above ``cap`` (a power of two). A multi-row statement is compiled per size,
    and compiling one of a few hundred rows costs about three times as much as
    running it; with power-of-two sizes a handful of shapes, each prepared once
    and kept in the connection's statement cache, covers every batch."""
    sizes = []
    while rows:
        size = min(cap, 1 << (rows.bit_length() - 1))
        sizes.append(size)
        rows -= size
    return sizes


def _insert_rows(
    conn: sqlite3.Connection, sql: str, row: str, params: Sequence[Any], tail: str = ""
) -> None:
    """``sql VALUES row, row, ... tail`` for all of ``params``, in cached sizes."""
    width = row.count("?")
    start = 0
    for size in statement_sizes(len(params) // width, STATEMENT_ROWS):
        end = start + size * width
        conn.execute(f"{sql} VALUES {_marks(row, size)}{tail}", params[start:end])
        start = end


def run_ingests(conn: sqlite3.Connection, requests: Sequence[Ingest]) -> list[IngestResult]:
    """Store the leads of several requests with a few multi-row statements.

    The first occurrence of an id wins; later ones, in the same request or
    another, are duplicates.
    """
    params: list[Any] = []
    for req in requests:
        params += req.rows
    rows = len(params) // LEAD_FIELDS
    # Which leads went in: all of them when the count of changes says so (no
    # duplicate, the usual case), otherwise those after the largest rowid before
    # this batch (a new row's rowid is one more than the largest). Cheaper than
    # RETURNING, which hands each row back to Python one step at a time.
    (before,) = conn.execute("SELECT coalesce(max(rowid), 0) FROM leads").fetchone()
    changes = conn.total_changes
    _insert_rows(
        conn,
        "INSERT INTO leads (id, received_at, created, url, payload)",
        _LEAD_ROW,
        params,
        " ON CONFLICT (id) DO NOTHING",
    )
    inserted_all = conn.total_changes - changes == rows
    if (
        conn.execute(_ANY_TOMBSTONE).fetchone()[0]
        and conn.execute(_TOMBSTONED, (before,)).fetchone() is not None
    ):
        # A re-send of an erased lead: only ids that were not stored already can
        # be tombstoned, so this looks at the rows just inserted, through the
        # tombstones' primary key (nothing to find in the usual case).
        conn.execute(
            "DELETE FROM leads WHERE rowid IN (SELECT l.rowid FROM leads l "
            "CROSS JOIN erased_leads e ON e.id = l.id WHERE l.rowid > ?)",
            (before,),
        )
        inserted_all = False
    results = [IngestResult() for _ in requests]
    if inserted_all:
        backlog: SearchBacklog | None = getattr(conn, "search_backlog", None)
        first = before + 1  # a new row's rowid is one more than the largest
        for req, result in zip(requests, results, strict=True):
            ids = req.ids()
            result.accepted = list(ids)
            if backlog is not None and req.search is not None:
                backlog.add(first, ids, req.search)
            first += len(ids)
    else:
        inserted = {r[0] for r in conn.execute("SELECT id FROM leads WHERE rowid > ?", (before,))}
        for req, result in zip(requests, results, strict=True):
            for lead_id in req.ids():
                if lead_id in inserted:
                    inserted.discard(lead_id)
                    result.accepted.append(lead_id)
                else:
                    result.duplicates.append(lead_id)
    destinations = requests[0].destinations if requests else ()
    if all(req.destinations == destinations for req in requests):
        # The usual case (one intake, one list of destinations): each
        # destination's outbox rows straight from the rows just inserted.
        for dest in destinations:
            conn.execute(
                "INSERT INTO deliveries (lead_id, destination, status, created_at, "
                "next_attempt_at, updated_at) SELECT id, ?, 'pending', received_at, "
                "received_at, received_at FROM leads WHERE rowid > ? ORDER BY rowid",
                (dest, before),
            )
    else:
        delivery_params: list[Any] = []
        for req, result in zip(requests, results, strict=True):
            now = req.now
            for lead_id in result.accepted:
                for dest in req.destinations:
                    delivery_params += (lead_id, dest, now, now, now)
        _insert_rows(
            conn,
            "INSERT INTO deliveries (lead_id, destination, status, created_at, "
            "next_attempt_at, updated_at)",
            _DELIVERY_ROW,
            delivery_params,
        )
    quarantined = [(req.now, *q) for req in requests for q in req.quarantine]
    if quarantined:
        conn.executemany(
            "INSERT INTO quarantine (received_at, reason, lead_id, item_index, raw) "
            "VALUES (?, ?, ?, ?, ?)",
            quarantined,
        )
    return results


def claim(
    conn: sqlite3.Connection,
    destination: str,
    limit: int,
    lease_until: float,
    now: float,
    token: str,
) -> list[Claim]:
    rows = conn.execute(
        "UPDATE deliveries SET next_attempt_at = ?, lease_token = ? "
        "WHERE id IN (SELECT id FROM deliveries WHERE status = 'pending' "
        "AND destination = ? AND next_attempt_at <= ? "
        "ORDER BY next_attempt_at LIMIT ?) "
        "RETURNING id, lead_id, attempts, created_at",
        (lease_until, token, destination, now, limit),
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
        claims.append(Claim(did, lid, destination, attempts, created, token, payload, received))
    return claims


def finish(conn: sqlite3.Connection, outcomes: Sequence[Outcome]) -> list[bool]:
    """Apply outcomes with one UPDATE ... FROM (VALUES ...) and one multi-row INSERT
    per chunk, not two statements per outcome: at thousands of deliveries a
    second, the writer's per-statement cost is what delays intake's commits.

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
            params += outcome_values(o)
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


def release(conn: sqlite3.Connection, leases: Sequence[tuple[int, str]], now: float) -> int:
    count = 0
    for did, token in leases:
        count += conn.execute(
            "UPDATE deliveries SET next_attempt_at = ?, lease_token = NULL "
            "WHERE id = ? AND lease_token = ? AND status = 'pending'",
            (now, did, token),
        ).rowcount
    return count


def replay_part(
    conn: sqlite3.Connection,
    now: float,
    lead_id: str | None,
    destination: str | None,
    dead_only: bool,
    force: bool,
    after: Any,
    limit: int,
) -> tuple[ReplayResult, Any]:
    """One transaction of a replay (:meth:`bridge.store.base.Store.replay`).

    One lead: all its rows at once. Dead letters: up to ``limit`` of those
    that were dead when the replay began (updated at or before the cursor,
    the newest dead letter's time then), found through the partial index of
    dead rows; requeued ones leave it, so each part takes the next ones.
    Anything else: ``limit`` rows examined in id order from the cursor.
    """
    where, params = ["1 = 1"], []  # type: tuple[list[str], list[Any]]
    if destination is not None:
        where.append("destination = ?")
        params.append(destination)
    cursor: Any = None
    if lead_id is not None:
        where.append("lead_id = ?")
        params.append(lead_id)
        if dead_only:
            where.append("status = 'dead'")
        sql = f"SELECT id, status FROM deliveries WHERE {' AND '.join(where)}"  # noqa: S608
        rows = conn.execute(sql, params).fetchall()
    elif dead_only:
        where.append("status = 'dead'")
        cond = " AND ".join(where)
        if after is None:
            (after,) = conn.execute(
                f"SELECT max(updated_at) FROM deliveries WHERE {cond}",  # noqa: S608
                params,
            ).fetchone()
        rows = conn.execute(
            f"SELECT id, status FROM deliveries WHERE {cond} AND updated_at <= ? LIMIT ?",  # noqa: S608
            [*params, after, limit],
        ).fetchall()
        cursor = after if len(rows) == limit else None
    else:
        examined = conn.execute(
            "SELECT id, status, destination FROM deliveries WHERE id > ? ORDER BY id LIMIT ?",
            (after or 0, limit),
        ).fetchall()
        rows = [(i, st) for i, st, d in examined if destination is None or d == destination]
        cursor = examined[-1][0] if len(examined) == limit else None
    ids, result = replay_choice(rows, force)
    if ids:
        conn.execute(
            "UPDATE deliveries SET status = 'pending', next_attempt_at = ?, "  # noqa: S608
            "lease_token = NULL, created_at = ?, updated_at = ? "
            f"WHERE id IN ({','.join('?' * len(ids))})",
            (now, now, now, *ids),
        )
    return result, cursor


def add_deliveries(
    conn: sqlite3.Connection, lead_id: str, destinations: Sequence[str], now: float
) -> int:
    count = 0
    for dest in destinations:
        count += conn.execute(
            "INSERT INTO deliveries (lead_id, destination, status, created_at, "
            "next_attempt_at, updated_at) SELECT id, ?, 'pending', ?, ?, ? "
            "FROM leads WHERE id = ? ON CONFLICT (lead_id, destination) DO NOTHING",
            (dest, now, now, now, lead_id),
        ).rowcount
    return count


def purge_payloads_part(
    conn: sqlite3.Connection, before: float, after: tuple[float, int] | None, limit: int
) -> tuple[int, tuple[float, int] | None]:
    """One transaction of a purge (:meth:`bridge.store.base.Store.purge_payloads`):
    the next ``limit`` leads received before ``before``, in the order of the
    received_at index from the cursor ``(received_at, rowid)``."""
    if after is None:
        leads = conn.execute(
            "SELECT received_at, rowid, id, payload FROM leads WHERE received_at < ? "
            "ORDER BY received_at, rowid LIMIT ?",
            (before, limit),
        ).fetchall()
    else:
        leads = conn.execute(
            "SELECT received_at, rowid, id, payload FROM leads WHERE received_at < ? "
            "AND (received_at, rowid) > (?, ?) ORDER BY received_at, rowid LIMIT ?",
            (before, *after, limit),
        ).fetchall()
    if not leads:
        return 0, None
    purged = {
        row[0]
        for row in conn.execute(
            f"UPDATE leads SET {PURGE_SET.format(mark='?')} "  # noqa: S608
            f"WHERE rowid IN ({','.join('?' * len(leads))}) AND {PURGEABLE} RETURNING rowid",
            (time.time(), *(lead[1] for lead in leads)),
        )
    }
    # Their search entries go with the payload (indexed or not yet, alike).
    _drop_search_entries(
        conn, [(lid, payload) for _, rowid, lid, payload in leads if rowid in purged]
    )
    return len(purged), (tuple(leads[-1][:2]) if len(leads) == limit else None)


def erase_part(
    conn: sqlite3.Connection,
    lead_ids: Sequence[str],
    quarantine_ids: Sequence[int],
    attempt_ids: Sequence[int],
    scrub_ids: Sequence[int],
    now: float,
) -> EraseReport:
    """One part of an erasure plan (:mod:`bridge.store.erasure`), one transaction."""
    report = EraseReport()
    part = {
        "lead_ids": lead_ids,
        "quarantine_ids": quarantine_ids,
        "attempt_ids": attempt_ids,
        "scrub_ids": scrub_ids,
    }

    def run(steps: Sequence[tuple[str, str, str]]) -> None:
        for field, sql, source in steps:
            if ids := list(part[source]):
                marks = ",".join("?" * len(ids))
                params = [ERASED_ERROR, *ids] if "{mark}" in sql else ids
                count = conn.execute(sql.format(ids=f"IN ({marks})", mark="?"), params).rowcount
                setattr(report, field, getattr(report, field) + count)

    run(ERASE_BEFORE_LEADS)
    if lead_ids:
        marks = ",".join("?" * len(lead_ids))
        deleted = conn.execute(
            ERASE_LEADS.format(ids=f"IN ({marks})") + ", payload", list(lead_ids)
        ).fetchall()
        _drop_search_entries(conn, deleted)  # the search entries of the erased leads
        gone = [lid for lid, _ in deleted]
        report.leads = len(gone)
        report.lead_ids = sorted(gone)
        conn.executemany(
            "INSERT INTO erased_leads (id, erased_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
            [(lid, now) for lid in gone],
        )
    run(ERASE_AFTER_LEADS)
    return report


def set_search_key(conn: sqlite3.Connection, key: bytes) -> None:
    """The writer indexes emails and phones with this key from now on."""
    conn.search_hasher = SearchHasher(key)  # type: ignore[attr-defined]
    conn.search_backlog = SearchBacklog()  # type: ignore[attr-defined]


def _search_entries(
    hasher: SearchHasher, leads: Iterable[tuple[str, str | None]]
) -> list[tuple[bytes, str]]:
    """The lead_search rows of ``(lead id, payload)`` pairs."""
    return [
        (h, lead_id)
        for lead_id, payload in leads
        if payload is not None
        for h in hasher.payload(payload)
        if h is not None
    ]


def _drop_search_entries(conn: sqlite3.Connection, leads: Iterable[tuple[str, str | None]]) -> int:
    """Delete the lead_search rows of these leads, found by hashing their
    payloads again (lead_search is keyed by hash); the count deleted."""
    hasher = search_hasher(conn)
    if hasher is None:
        return 0
    before = conn.total_changes
    conn.executemany(
        "DELETE FROM lead_search WHERE hash = ? AND lead_id = ?", _search_entries(hasher, leads)
    )
    return conn.total_changes - before


def index_search(conn: sqlite3.Connection, limit: int, hasher: SearchHasher | None = None) -> int:
    """Index up to ``limit`` leads above the watermark and move it; returns the
    leads covered (0: nothing new).

    Intake's commits leave the search index out, so a webhook's 200 never
    waits for it: the hashes are computed here, with ``hasher`` (default: the
    writer's key), from the values the writer kept when it parsed the bodies
    (:class:`SearchBacklog`), else from the stored payloads, and go into
    ``lead_search`` sorted by hash (each index page is written once per batch).
    The lead rows' own hash columns are left as they are (PostgreSQL's; on
    SQLite only rows of older versions have them).
    """
    hasher = hasher or search_hasher(conn)
    if hasher is None:
        return 0
    (mark,) = conn.execute(
        "SELECT CAST(value AS INTEGER) FROM settings WHERE name = ?", (INDEXED_ROWID,)
    ).fetchone() or (0,)
    mark = int(mark)
    (top,) = conn.execute("SELECT coalesce(max(rowid), 0) FROM leads").fetchone()
    upto = min(int(top), mark + limit)
    if upto <= mark:
        return 0
    backlog: SearchBacklog | None = getattr(conn, "search_backlog", None)
    known = backlog.take(mark, upto) if backlog is not None else {}
    email_hash, phone_hash = hasher.email, hasher.phone
    entries: list[tuple[bytes, str]] = []
    for rowid, lead_id, payload in conn.execute(
        "SELECT rowid, id, payload FROM leads WHERE rowid > ? AND rowid <= ? "
        "AND payload IS NOT NULL",
        (mark, upto),
    ):
        values = known.get(rowid)
        if values is not None and values[0] == lead_id:
            email = None if values[1] is None else email_hash(values[1])
            phone = None if values[2] is None else phone_hash(values[2])
        else:
            email, phone = hasher.payload(payload)
        if email is not None:
            entries.append((email, lead_id))
        if phone is not None:
            entries.append((phone, lead_id))
    entries.sort()
    conn.executemany("INSERT OR IGNORE INTO lead_search (hash, lead_id) VALUES (?, ?)", entries)
    conn.execute(
        "INSERT INTO settings (name, value) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (INDEXED_ROWID, str(upto)),
    )
    return upto - mark


def reset_search_watermark(conn: sqlite3.Connection) -> None:
    """Index every lead again (after the hashes were recomputed with a new key)."""
    conn.execute("DELETE FROM lead_search")
    conn.execute(
        "INSERT INTO settings (name, value) VALUES (?, '0') "
        "ON CONFLICT (name) DO UPDATE SET value = '0'",
        (INDEXED_ROWID,),
    )


def clear_search_index(conn: sqlite3.Connection, lead_ids: Sequence[str]) -> int:
    """Drop the search index entries of these leads (their row stays); the
    leads that had any. Every lead is indexed first, so that no later batch
    indexes these again."""
    while index_search(conn, INDEX_BATCH) == INDEX_BATCH:
        pass
    count = 0
    for start in range(0, len(lead_ids), 500):
        chunk = list(lead_ids[start : start + 500])
        marks = ",".join("?" * len(chunk))
        # Rows of older versions carry their hashes: clearing them fires the
        # trigger that drops their entries.
        cleared = {
            row[0]
            for row in conn.execute(
                "UPDATE leads SET email_hash = NULL, phone_hash = NULL "  # noqa: S608
                f"WHERE id IN ({marks}) AND (email_hash IS NOT NULL OR phone_hash IS NOT NULL) "
                "RETURNING id",
                chunk,
            )
        }
        for lead in conn.execute(
            f"SELECT id, payload FROM leads WHERE id IN ({marks})",  # noqa: S608
            chunk,
        ).fetchall():
            if _drop_search_entries(conn, [lead]):
                cleared.add(lead[0])
        count += len(cleared)
    return count


def execute(conn: sqlite3.Connection, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
    """The operator operations' writes (:meth:`bridge.store.base.Store.execute`),
    in one transaction; the row count of each."""
    return [conn.execute(sql, params).rowcount for sql, params in statements]


def drop_quarantine(
    conn: sqlite3.Connection, before: float | None, upto_id: int | None, limit: int
) -> int:
    """At most ``limit`` of the oldest quarantine rows received before ``before``
    or with an id up to ``upto_id`` (see :meth:`Store.drop_quarantine`)."""
    conds, params = quarantine_drop_condition(before, upto_id, "?")
    if not conds:
        return 0
    return conn.execute(
        "DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine "  # noqa: S608
        f"WHERE {conds} ORDER BY id LIMIT ?)",
        [*params, limit],
    ).rowcount


def noop(conn: sqlite3.Connection) -> None:
    """Commits nothing; returns once every write queued before it has committed."""


def fail(conn: sqlite3.Connection, message: str) -> None:
    """A request the writer could not prepare: fails alone, with the reason."""
    raise StoreError(message)


# Intake's operations: the writer runs these together (run_ingests).
INGESTS = frozenset({"ingest", "ingest_body"})

# Every other write, by name.
OPS: dict[str, Callable[..., Any]] = {
    "claim": claim,
    "finish": finish,
    "release": release,
    "replay_part": replay_part,
    "add_deliveries": add_deliveries,
    "purge_payloads_part": purge_payloads_part,
    "erase_part": erase_part,
    "drop_quarantine": drop_quarantine,
    "noop": noop,
    "fail": fail,
    "set_search_key": set_search_key,
    "clear_search_index": clear_search_index,
    "index_search": index_search,
    "execute": execute,
}
