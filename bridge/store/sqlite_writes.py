"""Every write of the SQLite store, as a named operation on a connection.

They run in the writer process (:mod:`bridge.store.sqlite_writer`), so each one
is a plain function of picklable arguments, found by name in :data:`OPS`.
Intake's ``ingest`` operations are special: several of them committed together
share their statements (:func:`bridge.store.sqlite_ingest.run_ingests`), not only
the fsync; the search index's writes are in :mod:`bridge.store.sqlite_search`.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

from bridge.errors import StoreError
from bridge.store.base import (
    Claim,
    EraseReport,
    Outcome,
    ReplayResult,
    outcome_values,
    quarantine_drop_condition,
    replay_choice,
)
from bridge.store.erasure import ERASE_AFTER_LEADS, ERASE_BEFORE_LEADS, ERASE_LEADS, ERASED_ERROR
from bridge.store.sql_shared import PURGE_SET, PURGEABLE
from bridge.store.sqlite_ingest import (
    LEAD_FIELDS,
    STATEMENT_ROWS,
    Ingest,
    lead_rows,
    prepare_body,
    run_ingests,
    statement_sizes,
)
from bridge.store.sqlite_search import (
    BACKLOG_LEADS,
    INDEX_BATCH,
    SearchBacklog,
    clear_search_index,
    drop_search_entries,
    index_search,
    reset_search_watermark,
    search_hasher,
    set_search_key,
)

# Intake's writes (bridge/store/sqlite_ingest.py) and the search index's
# (bridge/store/sqlite_search.py) are also importable from here.
__all__ = [
    "BACKLOG_LEADS",
    "INDEX_BATCH",
    "INGESTS",
    "LEAD_FIELDS",
    "OPS",
    "STATEMENT_ROWS",
    "Ingest",
    "SearchBacklog",
    "index_search",
    "lead_rows",
    "prepare_body",
    "reset_search_watermark",
    "run_ingests",
    "search_hasher",
    "set_search_key",
    "statement_sizes",
]

# Rows per statement: 10 parameters each stays far below SQLite's variable limit.
_FINISH_CHUNK = 500


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
    drop_search_entries(
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
        drop_search_entries(conn, deleted)  # the search entries of the erased leads
        gone = [lid for lid, _ in deleted]
        report.leads = len(gone)
        report.lead_ids = sorted(gone)
        conn.executemany(
            "INSERT INTO erased_leads (id, erased_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
            [(lid, now) for lid in gone],
        )
    run(ERASE_AFTER_LEADS)
    return report


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
