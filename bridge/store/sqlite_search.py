"""The SQLite store's search index, written by the writer process: the hashes
of leads' emails and phones, computed in batches off intake's commit path
(:func:`index_search`), from the values the writer kept when it parsed the
bodies (:class:`SearchBacklog`); and the writes that drop or redo entries.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from bridge.store.search import INDEXED_ROWID, SearchHasher

# Leads one index_search transaction covers at most (the store's batches).
INDEX_BATCH = 2000
# Leads whose search values the writer keeps for the index at most (SearchBacklog;
# about 200 bytes each).
BACKLOG_LEADS = 50_000


def search_hasher(conn: sqlite3.Connection) -> SearchHasher | None:
    """The search key the writer indexes with on this connection (None: none yet)."""
    hasher: SearchHasher | None = getattr(conn, "search_hasher", None)
    return hasher


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


def drop_search_entries(conn: sqlite3.Connection, leads: Iterable[tuple[str, str | None]]) -> int:
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
            if drop_search_entries(conn, [lead]):
                cleared.add(lead[0])
        count += len(cleared)
    return count
