"""What both SQL backends (SQLite, PostgreSQL) write and read the same way:
the deliveries columns and their record, the values an outcome writes, which
deliveries a replay requeues, the payload purge, the quarantine retention queries, and which
migrations a database still needs. ``mark`` is the backend's placeholder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bridge.errors import StoreError
from bridge.models import DeliveryRecord, Outcome, ReplayResult

# The deliveries columns every backend selects, in the order delivery_from_row reads.
DELIVERY_COLUMNS = (
    "id, lead_id, destination, status, attempts, created_at, next_attempt_at, "
    "lease_token, last_error, last_status_code, remote_id, delivered_at, updated_at"
)


# Retention's payload purge, both backends: what a purged lead row becomes
# ({mark}: the purge time), and which leads of a part qualify (every delivery
# finished; a lead never given a delivery, for lack of a destination then, is
# not delivered).
PURGE_SET = "payload = NULL, email_hash = NULL, phone_hash = NULL, purged_at = {mark}"
PURGEABLE = (
    "leads.payload IS NOT NULL AND NOT EXISTS (SELECT 1 FROM deliveries d "
    "WHERE d.lead_id = leads.id AND d.status NOT IN ('delivered', 'skipped')) "
    "AND EXISTS (SELECT 1 FROM deliveries d WHERE d.lead_id = leads.id)"
)


def versions_to_apply(current: int, latest: int) -> range:
    """The schema versions a database at ``current`` still needs; a database
    newer than this code (``latest``) is refused rather than misread."""
    if current > latest:
        raise StoreError(
            f"database schema version {current} is newer than this lead-bridge "
            f"({latest}); upgrade lead-bridge"
        )
    return range(current + 1, latest + 1)


def replay_choice(rows: Sequence[tuple[int, str]], force: bool) -> tuple[list[int], ReplayResult]:
    """Of the matching deliveries ``(id, status)``, the ones a replay requeues:
    dead and skipped ones, delivered ones only with ``force``; pending ones are
    queued already. ``requeued`` is set; the caller updates those rows."""
    result = ReplayResult()
    if not rows:
        result.not_found = 1
        return [], result
    ids = []
    for did, status in rows:
        if status == "delivered" and not force:
            result.refused_delivered += 1
        elif status != "pending":
            ids.append(did)
    result.requeued = len(ids)
    return ids, result


def outcome_values(o: Outcome) -> tuple[Any, ...]:
    """What an outcome writes to its delivery row, in the order both backends
    bind it: id, lease token (the fence), status, attempts increment,
    next_attempt_at, last_error, last_status_code, remote_id, delivered_at,
    updated_at."""
    ended = o.started_at + o.duration
    return (
        o.delivery_id,
        o.lease_token,
        o.status,
        1 if o.count_attempt else 0,
        o.next_attempt_at if o.status == "pending" else None,
        o.error,
        o.status_code,
        o.remote_id,
        ended if o.status == "delivered" else None,
        ended,
    )


def quarantine_drop_condition(
    before: float | None, upto_id: int | None, mark: str
) -> tuple[str, list[Any]]:
    """The WHERE condition (and its parameters) of the quarantine rows retention
    drops, shared by both backends (``mark``: their placeholder); "" drops none."""
    conds, params = [], []  # type: tuple[list[str], list[Any]]
    if before is not None:
        conds.append(f"received_at < {mark}")
        params.append(before)
    if upto_id is not None:
        conds.append(f"id <= {mark}")
        params.append(upto_id)
    return " OR ".join(conds), params


def quarantine_cutoff_query(
    max_rows: int | None, max_bytes: int | None, mark: str, size: str
) -> tuple[str, list[Any]]:
    """The query for :meth:`Store.quarantine_cutoff`: the newest quarantine row
    beyond a cap, counting from the newest (``size``: the backend's byte length
    of ``raw``). "" when there is no cap."""
    conds, params = [], []  # type: tuple[list[str], list[Any]]
    if max_rows is not None:
        conds.append(f"n > {mark}")
        params.append(max_rows)
    if max_bytes is not None:
        conds.append(f"total > {mark}")
        params.append(max_bytes)
    if not conds:
        return "", []
    return (
        f"SELECT id FROM (SELECT id, row_number() OVER w AS n, sum({size}) OVER w AS total "  # noqa: S608
        "FROM quarantine WINDOW w AS (ORDER BY id DESC)) AS r "
        f"WHERE {' OR '.join(conds)} ORDER BY id DESC LIMIT 1",
        params,
    )


def delivery_from_row(row: Sequence[Any], now: float) -> DeliveryRecord:
    """A DELIVERY_COLUMNS row as a record; ``leased`` is derived from the lease token."""
    (did, lid, dest, status, attempts, created, nxt, token, err, code, rid, dat, upd) = row
    leased = token is not None and status == "pending" and (nxt or 0) > now
    return DeliveryRecord(
        did, lid, dest, status, attempts, created, nxt, leased, err, code, rid, dat, upd
    )
