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
from collections.abc import Callable, Sequence
from typing import Any

from bridge.errors import StoreError
from bridge.leads import Batch, parse_body, quarantined_body
from bridge.store.base import (
    BodyResult,
    Claim,
    EraseReport,
    IngestResult,
    LeadIn,
    Outcome,
    ReplayResult,
    body_result,
    outcome_values,
    quarantine_drop_condition,
    replay_choice,
)
from bridge.store.erasure import ERASED_ERROR
from bridge.store.search import INDEXED_ROWID, SearchHasher

# Values per lead in an Ingest's flat ``rows``, in the order of the leads
# table's INSERT: id, received_at, created, url, payload, email_hash, phone_hash.
LEAD_FIELDS = 7

_LEAD_ROW = "(?, ?, ?, ?, ?, ?, ?)"
_DELIVERY_ROW = "(?, ?, 'pending', ?, ?, ?)"
STATEMENT_ROWS = 256  # rows per INSERT at most (SQLite allows 32,766 parameters)
# Rows per statement: 10 parameters each stays far below SQLite's variable limit.
_FINISH_CHUNK = 500
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
    the writer parsed the raw body itself (:func:`prepare_body`). ``hasher``:
    the search key the rows' two hashes were computed with (None: not computed,
    :func:`run_ingests` does it from the payload text).
    """

    __slots__ = ("batch", "destinations", "hasher", "now", "quarantine", "rows")

    def __init__(
        self,
        rows: Sequence[Any],
        destinations: Sequence[str],
        quarantine: Sequence[tuple[str, str | None, int | None, str]],
        now: float,
        batch: Batch | None = None,
        hasher: SearchHasher | None = None,
    ) -> None:
        self.rows = rows
        self.destinations = destinations
        self.quarantine = quarantine  # (reason, lead_id, item_index, raw)
        self.now = now
        self.batch = batch
        self.hasher = hasher

    def ids(self) -> Sequence[str]:
        return self.rows[::LEAD_FIELDS]

    def answer(self, stored: IngestResult) -> IngestResult | BodyResult:
        return stored if self.batch is None else body_result(self.batch, stored)


def lead_rows(leads: Sequence[LeadIn], now: float) -> list[Any]:
    """Leads as an Ingest's flat ``rows``, search hashes not computed yet."""
    return [
        v
        for lead in leads
        for v in (lead.id, now, lead.created, lead.url, lead.payload, None, None)
    ]


def search_hasher(conn: sqlite3.Connection) -> SearchHasher | None:
    """The search key intake indexes with on this connection (None: no index yet)."""
    hasher: SearchHasher | None = getattr(conn, "search_hasher", None)
    return hasher


def prepare_body(
    body: bytes, destinations: Sequence[str], now: float, hasher: SearchHasher | None = None
) -> Ingest:
    """A raw webhook body as an Ingest: parsed and split here, in the writer
    process, with :func:`bridge.leads.parse_body` as intake would; the search
    hashes (with ``hasher``) from the leads just parsed, not from their text."""
    batch = parse_body(body)
    if batch.problem is not None:
        q = quarantined_body(body, batch.problem)
        return Ingest([], (), [(q.reason, None, None, q.raw)], now, batch)
    quarantine = [(q.reason, q.lead_id, q.item_index, q.raw) for q in batch.rejected]
    if hasher is None:
        return Ingest(lead_rows(batch.leads, now), destinations, quarantine, now, batch)
    email_hash, phone_hash = hasher.email, hasher.phone
    rows: list[Any] = []
    for lead, element in zip(batch.leads, batch.elements, strict=True):
        # parse_body let only an object (or nothing) through as "data".
        data = element.get("data")
        if data:
            email = data.get("email")
            phone = data.get("phone")
            rows += (
                lead.id,
                now,
                lead.created,
                lead.url,
                lead.payload,
                None if email is None else email_hash(email),
                None if phone is None else phone_hash(phone),
            )
        else:
            rows += (lead.id, now, lead.created, lead.url, lead.payload, None, None)
    return Ingest(rows, destinations, quarantine, now, batch, hasher)


def _hash_rows(req: Ingest, hasher: SearchHasher | None) -> None:
    """Set the search hashes of rows prepared without this key, from the payload text."""
    rows = list(req.rows)
    for at in range(0, len(rows), LEAD_FIELDS):
        pair = (None, None) if hasher is None else hasher.payload(rows[at + 4])
        rows[at + 5], rows[at + 6] = pair
    req.rows, req.hasher = rows, hasher


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
    hasher = search_hasher(conn)
    params: list[Any] = []
    for req in requests:
        if req.hasher is not hasher and req.rows:
            _hash_rows(req, hasher)  # leads from Store.ingest, or a key just changed
        params += req.rows
    rows = len(params) // LEAD_FIELDS
    # Which leads went in: all of them when the count of changes says so (no
    # duplicate, the usual case), otherwise those after the largest rowid before
    # this batch (a new row's rowid is one more than the largest). Cheaper than
    # RETURNING, which hands each row back to Python one step at a time.
    (before,) = conn.execute("SELECT coalesce(max(rowid), 0) FROM leads").fetchone()
    changes = conn.total_changes
    # The search index's hashes (bridge/store/search.py) are plain values,
    # computed from the parsed body (prepare_body): no SQL function, no re-parse.
    _insert_rows(
        conn,
        "INSERT INTO leads (id, received_at, created, url, payload, email_hash, phone_hash)",
        _LEAD_ROW,
        params,
        " ON CONFLICT (id) DO NOTHING",
    )
    inserted_all = conn.total_changes - changes == rows
    if conn.execute(_TOMBSTONED, (before,)).fetchone() is not None:
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
        for req, result in zip(requests, results, strict=True):
            result.accepted = list(req.ids())
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
            "SELECT received_at, rowid FROM leads WHERE received_at < ? "
            "ORDER BY received_at, rowid LIMIT ?",
            (before, limit),
        ).fetchall()
    else:
        leads = conn.execute(
            "SELECT received_at, rowid FROM leads WHERE received_at < ? "
            "AND (received_at, rowid) > (?, ?) ORDER BY received_at, rowid LIMIT ?",
            (before, *after, limit),
        ).fetchall()
    if not leads:
        return 0, None
    purged = conn.execute(
        "UPDATE leads SET payload = NULL, email_hash = NULL, phone_hash = NULL, "  # noqa: S608
        f"purged_at = ? WHERE rowid IN ({','.join('?' * len(leads))}) "
        "AND payload IS NOT NULL AND NOT EXISTS (SELECT 1 FROM deliveries d "
        "WHERE d.lead_id = leads.id AND d.status NOT IN ('delivered', 'skipped')) "
        # A lead never given a delivery (no destination then) is not delivered.
        "AND EXISTS (SELECT 1 FROM deliveries d WHERE d.lead_id = leads.id)",
        (time.time(), *(rowid for _, rowid in leads)),
    ).rowcount
    return purged, (tuple(leads[-1]) if len(leads) == limit else None)


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

    def delete(sql: str, ids: Sequence[Any]) -> int:
        if not ids:
            return 0
        marks = ",".join("?" * len(ids))
        return conn.execute(sql.format(marks), list(ids)).rowcount

    report.attempts = delete("DELETE FROM attempts WHERE lead_id IN ({})", lead_ids)
    report.attempts += delete("DELETE FROM attempts WHERE id IN ({})", attempt_ids)
    report.deliveries = delete("DELETE FROM deliveries WHERE lead_id IN ({})", lead_ids)
    if lead_ids:
        marks = ",".join("?" * len(lead_ids))
        gone = [
            r[0]
            for r in conn.execute(
                f"DELETE FROM leads WHERE id IN ({marks}) RETURNING id",  # noqa: S608
                list(lead_ids),
            )
        ]
        report.leads = len(gone)
        report.lead_ids = sorted(gone)
        conn.executemany(
            "INSERT INTO erased_leads (id, erased_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
            [(lid, now) for lid in gone],
        )
    report.quarantine = delete("DELETE FROM quarantine WHERE id IN ({})", quarantine_ids)
    if scrub_ids:
        marks = ",".join("?" * len(scrub_ids))
        report.errors_scrubbed = conn.execute(
            f"UPDATE deliveries SET last_error = ? WHERE id IN ({marks})",  # noqa: S608
            [ERASED_ERROR, *scrub_ids],
        ).rowcount
    return report


def set_search_key(conn: sqlite3.Connection, key: bytes) -> None:
    """Intake indexes emails and phones with this key from now on."""
    conn.search_hasher = SearchHasher(key)  # type: ignore[attr-defined]


def reindex_search(conn: sqlite3.Connection, key: bytes, after: int, limit: int) -> int | None:
    """Recompute the search hashes of up to ``limit`` leads after rowid ``after``;
    the last rowid done, or None when no lead is left."""
    hasher = SearchHasher(key)
    rows = conn.execute(
        "SELECT rowid, payload FROM leads WHERE rowid > ? ORDER BY rowid LIMIT ?", (after, limit)
    ).fetchall()
    conn.executemany(
        "UPDATE leads SET email_hash = ?, phone_hash = ? WHERE rowid = ?",
        [(*hasher.payload(payload), rowid) for rowid, payload in rows],
    )
    return int(rows[-1][0]) if len(rows) == limit else None


def index_search(conn: sqlite3.Connection, limit: int) -> int:
    """Copy the search hashes of up to ``limit`` leads above the watermark into
    ``lead_search`` (sorted by hash: each index page is written once per batch)
    and move the watermark; returns the leads covered (0: nothing new)."""
    (mark,) = conn.execute(
        "SELECT CAST(value AS INTEGER) FROM settings WHERE name = ?", (INDEXED_ROWID,)
    ).fetchone() or (0,)
    (top,) = conn.execute("SELECT coalesce(max(rowid), 0) FROM leads").fetchone()
    upto = min(int(top), int(mark) + limit)
    if upto <= mark:
        return 0
    conn.execute(
        "INSERT OR IGNORE INTO lead_search (hash, lead_id) SELECT h, id FROM ("
        "SELECT email_hash AS h, id FROM leads WHERE rowid > ?1 AND rowid <= ?2 "
        "AND email_hash IS NOT NULL UNION ALL "
        "SELECT phone_hash, id FROM leads WHERE rowid > ?1 AND rowid <= ?2 "
        "AND phone_hash IS NOT NULL) ORDER BY h",
        (mark, upto),
    )
    conn.execute(
        "INSERT INTO settings (name, value) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (INDEXED_ROWID, str(upto)),
    )
    return upto - int(mark)


def reset_search_watermark(conn: sqlite3.Connection) -> None:
    """Index every lead again (after the hashes were recomputed with a new key)."""
    conn.execute("DELETE FROM lead_search")
    conn.execute(
        "INSERT INTO settings (name, value) VALUES (?, '0') "
        "ON CONFLICT (name) DO UPDATE SET value = '0'",
        (INDEXED_ROWID,),
    )


def clear_search_index(conn: sqlite3.Connection, lead_ids: Sequence[str]) -> int:
    """Drop the search hashes of these leads (their row stays)."""
    count = 0
    for start in range(0, len(lead_ids), 500):
        chunk = list(lead_ids[start : start + 500])
        marks = ",".join("?" * len(chunk))
        count += conn.execute(
            "UPDATE leads SET email_hash = NULL, phone_hash = NULL "  # noqa: S608
            f"WHERE id IN ({marks}) AND (email_hash IS NOT NULL OR phone_hash IS NOT NULL)",
            chunk,
        ).rowcount
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
    "reindex_search": reindex_search,
    "clear_search_index": clear_search_index,
    "index_search": index_search,
    "execute": execute,
}
