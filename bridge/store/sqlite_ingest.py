"""Intake's writes in the SQLite writer: webhook requests as :class:`Ingest`
values, and :func:`run_ingests`, which stores several of them, committed
together, with a few multi-row statements (not only one fsync).

They run in the writer process (:mod:`bridge.store.sqlite_writer`), which finds
them through :data:`bridge.store.sqlite_writes.INGESTS`.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from typing import Any

from bridge.leads import Batch, BodyResult, body_result, parse_body, quarantined_body
from bridge.store.base import IngestResult, LeadIn
from bridge.store.sqlite_search import SearchBacklog

# Values per lead in an Ingest's flat ``rows``, in the order of the leads
# table's INSERT: id, received_at, created, url, payload. The search hashes are
# not among them: :func:`bridge.store.sqlite_search.index_search` computes them in batches, off the commit
# path (bridge/store/search.py).
LEAD_FIELDS = 5

_LEAD_ROW = "(?, ?, ?, ?, ?)"
_DELIVERY_ROW = "(?, ?, 'pending', ?, ?, ?)"
STATEMENT_ROWS = 256  # rows per INSERT at most (SQLite allows 32,766 parameters)
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
    another, are duplicates. Each step below runs once per commit, not per lead.
    """
    before, inserted_all = _insert_leads(conn, requests)
    results = _results(conn, requests, before, inserted_all)
    _insert_outbox(conn, requests, results, before)
    quarantined = [(req.now, *q) for req in requests for q in req.quarantine]
    if quarantined:
        conn.executemany(
            "INSERT INTO quarantine (received_at, reason, lead_id, item_index, raw) "
            "VALUES (?, ?, ?, ?, ?)",
            quarantined,
        )
    return results


def _insert_leads(conn: sqlite3.Connection, requests: Sequence[Ingest]) -> tuple[int, bool]:
    """Insert the requests' leads (none that is stored or tombstoned); the
    largest rowid before them, and whether every lead went in."""
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
    return before, inserted_all


def _results(
    conn: sqlite3.Connection, requests: Sequence[Ingest], before: int, inserted_all: bool
) -> list[IngestResult]:
    """Each request's accepted leads and duplicates; with every lead in, their
    search values go to the writer's backlog for the index."""
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
    return results


def _insert_outbox(
    conn: sqlite3.Connection,
    requests: Sequence[Ingest],
    results: Sequence[IngestResult],
    before: int,
) -> None:
    """The pending deliveries of the accepted leads."""
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
        return
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
