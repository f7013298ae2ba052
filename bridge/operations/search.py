"""Find leads: by id, email, phone (through the keyed-hash index, never a
payload scan), received time, delivery status and destination. Newest first,
paginated with a stable cursor."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from bridge.errors import StoreError
from bridge.store.base import Store

# A lead's delivery status as the console shows it: "retrying" is a pending
# delivery that has failed at least once.
SEARCH_STATUSES = ("pending", "retrying", "delivered", "dead", "skipped")
MAX_LIMIT = 500
# Synthetic leads of "send a test lead" (bridge/operations/testsend.py).
TEST_PREFIX = "lb-test-"
# Totals are counted up to here; beyond, the page says "more than".
TOTAL_CAP = 10_000


class BadQuery(ValueError):
    """A search or filter parameter is wrong; the message names it."""


@dataclass(frozen=True)
class LeadQuery:
    """What to look for; every field is optional and they combine with AND."""

    lead_id: str | None = None
    email: str | None = None
    phone: str | None = None
    received_from: float | None = None  # epoch seconds, inclusive
    received_to: float | None = None  # epoch seconds, exclusive
    status: str | None = None  # one of SEARCH_STATUSES (any delivery of the lead)
    destination: str | None = None  # has a delivery to this destination


@dataclass(frozen=True)
class LeadSummary:
    id: str
    received_at: float
    purged: bool
    test: bool  # a synthetic test lead (id prefix lb-test-); never counted as real
    # destination -> status (pending / retrying / delivered / dead / skipped)
    deliveries: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LeadPage:
    leads: list[LeadSummary]
    next_cursor: str | None  # pass back as ``cursor`` for the next page; None: last page
    total: int  # matching leads, counted up to TOTAL_CAP
    total_capped: bool  # True: more than ``total`` match


def _delivery_condition(
    status: str | None, destination: str | None, *, correlated: bool = False
) -> tuple[str, list[Any]]:
    conds = ["d.lead_id = l.id"] if correlated else ["1 = 1"]
    params: list[Any] = []
    if destination is not None:
        conds.append("d.destination = ?")
        params.append(destination)
    # The status as a literal (from SEARCH_STATUSES): SQLite then picks the
    # status's partial index for sure.
    if status == "retrying":
        conds.append("d.status = 'pending' AND d.attempts > 0")
    elif status == "pending":
        conds.append("d.status = 'pending' AND d.attempts = 0")
    elif status is not None:
        assert status in SEARCH_STATUSES
        conds.append(f"d.status = '{status}'")
    return " AND ".join(conds), params


def _hash_condition(store: Store, column: str, hashed: bytes) -> tuple[str, list[Any]]:
    """Leads whose ``column`` (email_hash / phone_hash) is ``hashed``, through the
    index: PostgreSQL's on the column, SQLite's lead_search (bridge/store/search.py)."""
    if store.dialect == "sqlite":
        # As a set of rowids: the planner then never walks every lead newest
        # first to save the sort, as it may with an OR (bench/README.md,
        # "Figures behind comments").
        return (
            "l.rowid IN (SELECT i.rowid FROM lead_search s JOIN leads i ON i.id = s.lead_id "
            "WHERE s.hash = ?)",
            [hashed],
        )
    return f"l.{column} = ?", [hashed]


async def _index_now(store: Store, q: LeadQuery) -> None:
    """SQLite indexes in batches behind intake: the leads stored so far first."""
    index_now = getattr(store, "index_now", None)
    if index_now is not None and (q.email is not None or q.phone is not None):
        await index_now()


def _where(store: Store, q: LeadQuery, *, page: bool = False) -> tuple[str, list[Any]]:
    """The WHERE clause over ``leads l``. ``page``: for the newest-first page
    rather than the count (see the status condition)."""
    if q.status is not None and q.status not in SEARCH_STATUSES:
        raise BadQuery(f"status: expected one of {', '.join(SEARCH_STATUSES)}")
    conds: list[str] = []
    params: list[Any] = []
    if q.lead_id:
        conds.append("l.id = ?")
        params.append(q.lead_id)
    if q.email is not None or q.phone is not None:
        if store.search is None:
            raise StoreError("the store is not open (no search key)")
        for column, value, hashed in (
            ("email_hash", q.email, store.search.email(q.email) if q.email is not None else None),
            ("phone_hash", q.phone, store.search.phone(q.phone) if q.phone is not None else None),
        ):
            if value is None:
                continue
            if hashed is None:
                raise BadQuery(f"{column.split('_')[0]}: nothing to search for in the value given")
            cond, more = _hash_condition(store, column, hashed)
            conds.append(cond)
            params += more
    if q.received_from is not None:
        conds.append("l.received_at >= ?")
        params.append(q.received_from)
    if q.received_to is not None:
        conds.append("l.received_at < ?")
        params.append(q.received_to)
    if q.status is not None and q.status != "delivered":
        # Rare statuses: the set of their leads from the status's partial index,
        # not a probe lead after lead (which would read them all to count). For
        # a page, `l.id || ''` keeps the planner walking leads newest first,
        # checking the set, rather than fetching and sorting the whole set.
        cond, more = _delivery_condition(q.status, q.destination)
        column = "(l.id || '')" if page else "l.id"
        conds.append(f"{column} IN (SELECT d.lead_id FROM deliveries d WHERE {cond})")  # noqa: S608
        params += more
    elif q.status is not None:
        # Delivered: nearly every lead; a probe per lead finds them at once.
        cond, more = _delivery_condition(q.status, q.destination, correlated=True)
        conds.append(f"EXISTS (SELECT 1 FROM deliveries d WHERE {cond})")  # noqa: S608
        params += more
    elif q.destination is not None:
        # Nearly every lead has one: probe (lead_id, destination) lead by lead.
        cond, more = _delivery_condition(None, q.destination, correlated=True)
        conds.append(f"EXISTS (SELECT 1 FROM deliveries d WHERE {cond})")  # noqa: S608
        params += more
    return " AND ".join(conds) or "1 = 1", params


def encode_cursor(received_at: float, lead_id: str) -> str:
    raw = json.dumps([received_at, lead_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        received_at, lead_id = json.loads(raw)
        return float(received_at), str(lead_id)
    except (ValueError, TypeError):
        raise BadQuery("cursor: not a cursor this server returned") from None


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise BadQuery(f"limit: expected 1 to {MAX_LIMIT}, got {limit}")
    return limit


async def delivery_states(store: Store, lead_ids: list[str]) -> dict[str, dict[str, str]]:
    """lead id -> {destination: status}, "retrying" for pending rows that failed before."""
    out: dict[str, dict[str, str]] = {lid: {} for lid in lead_ids}
    for start in range(0, len(lead_ids), 500):
        chunk = lead_ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows = await store.fetch(
            "SELECT lead_id, destination, status, attempts FROM deliveries "  # noqa: S608
            f"WHERE lead_id IN ({marks})",
            chunk,
        )
        for lid, dest, status, attempts in rows:
            out[lid][dest] = "retrying" if status == "pending" and attempts else status
    return out


async def search_leads(
    store: Store, query: LeadQuery, *, limit: int = 50, cursor: str | None = None
) -> LeadPage:
    """Leads matching ``query``, newest first (received time, then id).

    ``cursor`` (from the previous page's ``next_cursor``) continues after the
    last lead shown: stable while new leads arrive. Raises :class:`BadQuery`.
    """
    check_limit(limit)
    await _index_now(store, query)
    where, params = _where(store, query)
    page_where, page_params = _where(store, query, page=True)
    if cursor:
        at, lid = decode_cursor(cursor)
        page_where += " AND (l.received_at < ? OR (l.received_at = ? AND l.id < ?))"
        page_params += [at, at, lid]
    rows = await store.fetch(
        "SELECT l.id, l.received_at, l.payload IS NULL FROM leads l "  # noqa: S608
        f"WHERE {page_where} ORDER BY l.received_at DESC, l.id DESC LIMIT ?",
        [*page_params, limit + 1],
    )
    more = len(rows) > limit
    rows = rows[:limit]
    (count,) = (
        await store.fetch(
            f"SELECT count(*) FROM (SELECT 1 FROM leads l WHERE {where} LIMIT ?) AS m",  # noqa: S608
            [*params, TOTAL_CAP + 1],
        )
    )[0]
    states = await delivery_states(store, [r[0] for r in rows])
    leads = [
        LeadSummary(lid, at, bool(purged), lid.startswith(TEST_PREFIX), states[lid])
        for lid, at, purged in rows
    ]
    next_cursor = encode_cursor(rows[-1][1], rows[-1][0]) if more and rows else None
    return LeadPage(leads, next_cursor, min(count, TOTAL_CAP), count > TOTAL_CAP)
