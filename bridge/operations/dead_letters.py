"""Dead letters: filter by destination, error class and time; preview how many
deliveries a bulk replay requeues; run it (selected ids or all matching), in
chunks so intake never waits behind one long transaction, audited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge.logs import redact
from bridge.operations.audit import audit_statement
from bridge.operations.search import BadQuery, check_limit, decode_cursor, encode_cursor
from bridge.store.base import (
    DELIVERY_COLUMNS,
    DeliveryRecord,
    Store,
    delivery_from_row,
    pause_after_part,
)

# Error classes, derived from what the engine stores (last_error, status code):
# one SQL expression, so filtering and display agree on both backends.
ERROR_CLASSES = (
    "auth",
    "mapping",
    "rate_limited",
    "http_4xx",
    "http_5xx",
    "timeout",
    "connection",
    "payload_gone",
    "other",
)
ERROR_CLASS_SQL = (
    "CASE "
    "WHEN last_error LIKE 'check the credentials%' OR last_status_code IN (401, 403) "
    "THEN 'auth' "
    "WHEN last_error LIKE 'mapping error:%' THEN 'mapping' "
    "WHEN last_status_code = 429 THEN 'rate_limited' "
    "WHEN last_status_code >= 500 OR last_status_code = 408 THEN 'http_5xx' "
    "WHEN last_status_code >= 400 THEN 'http_4xx' "
    "WHEN last_error LIKE '%timed out%' THEN 'timeout' "
    "WHEN last_error LIKE '%connection failed%' OR last_error LIKE '%cannot be reached%' "
    "OR last_error LIKE '%cannot resolve%' THEN 'connection' "
    "WHEN last_error LIKE '%no longer stored%' THEN 'payload_gone' "
    "ELSE 'other' END"
)
# Deliveries requeued per transaction by a bulk replay.
REPLAY_CHUNK = 500
MAX_IDS = 10_000


@dataclass(frozen=True)
class DeadLetterQuery:
    destination: str | None = None
    error_class: str | None = None  # one of ERROR_CLASSES
    since: float | None = None  # died at or after (epoch seconds)
    until: float | None = None  # died before


@dataclass(frozen=True)
class DeadLetter:
    delivery: DeliveryRecord
    error_class: str
    error: str | None  # last_error with emails masked and secrets removed


@dataclass(frozen=True)
class DeadLetterPage:
    items: list[DeadLetter]
    next_cursor: str | None
    total: int  # all matching (not only this page)


@dataclass(frozen=True)
class ReplayPreview:
    count: int  # dead deliveries a replay of the same selection would requeue now
    as_of: float  # pass to replay_dead_letters: later dead letters are left out
    by_destination: dict[str, int]


def _where(q: DeadLetterQuery, ids: list[int] | None, as_of: float | None) -> tuple[str, list[Any]]:
    if q.error_class is not None and q.error_class not in ERROR_CLASSES:
        raise BadQuery(f"error_class: expected one of {', '.join(ERROR_CLASSES)}")
    conds, params = ["status = 'dead'"], []  # type: tuple[list[str], list[Any]]
    if q.destination is not None:
        conds.append("destination = ?")
        params.append(q.destination)
    if q.error_class is not None:
        conds.append(f"{ERROR_CLASS_SQL} = ?")
        params.append(q.error_class)
    if q.since is not None:
        conds.append("updated_at >= ?")
        params.append(q.since)
    if q.until is not None:
        conds.append("updated_at < ?")
        params.append(q.until)
    if as_of is not None:
        conds.append("updated_at <= ?")
        params.append(as_of)
    if ids is not None:
        if not ids or len(ids) > MAX_IDS:
            raise BadQuery(f"ids: expected 1 to {MAX_IDS} delivery ids")
        conds.append(f"id IN ({','.join('?' * len(ids))})")
        params += ids
    return " AND ".join(conds), params


async def list_dead_letters(
    store: Store, query: DeadLetterQuery, *, limit: int = 50, cursor: str | None = None
) -> DeadLetterPage:
    """Dead deliveries matching ``query``, most recently died first, with each
    one's error class. Raises :class:`~bridge.operations.search.BadQuery`."""
    check_limit(limit)
    where, params = _where(query, None, None)
    page_where, page_params = where, list(params)
    if cursor:
        at, did = decode_cursor(cursor)
        page_where += " AND (updated_at < ? OR (updated_at = ? AND id < ?))"
        page_params += [at, at, int(did)]
    rows = await store.fetch(
        f"SELECT {DELIVERY_COLUMNS}, {ERROR_CLASS_SQL} FROM deliveries "  # noqa: S608
        f"WHERE {page_where} ORDER BY updated_at DESC, id DESC LIMIT ?",
        [*page_params, limit + 1],
    )
    more = len(rows) > limit
    now = time.time()
    items = [
        DeadLetter(
            d := delivery_from_row(r[:-1], now),
            str(r[-1]),
            redact(d.last_error) if d.last_error else None,
        )
        for r in rows[:limit]
    ]
    ((total,),) = await store.fetch(
        f"SELECT count(*) FROM deliveries WHERE {where}",  # noqa: S608
        params,
    )
    last = items[-1].delivery if items and more else None
    next_cursor = encode_cursor(last.updated_at, str(last.id)) if last else None
    return DeadLetterPage(items, next_cursor, int(total))


async def preview_replay(
    store: Store, query: DeadLetterQuery, *, ids: list[int] | None = None
) -> ReplayPreview:
    """How many dead deliveries a replay of this selection (``ids`` within the
    query, or all matching) would requeue, per destination. Changes nothing."""
    now = time.time()
    where, params = _where(query, ids, now)
    rows = await store.fetch(
        f"SELECT destination, count(*) FROM deliveries WHERE {where} "  # noqa: S608
        "GROUP BY destination ORDER BY destination",
        params,
    )
    by_dest = {str(d): int(c) for d, c in rows}
    return ReplayPreview(sum(by_dest.values()), now, by_dest)


async def replay_dead_letters(
    store: Store,
    query: DeadLetterQuery,
    *,
    actor: str,
    ids: list[int] | None = None,
    as_of: float | None = None,
    now: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Requeue the selected dead deliveries (``ids``, or all matching ``query``
    that died by ``as_of``, the preview's time): pending, due now, attempts kept,
    ``created_at`` reset so max_age starts over — as ``replay --dead``. Chunks of
    REPLAY_CHUNK per transaction; one audit entry. Returns the number requeued;
    wake the engine afterwards."""
    current = time.time() if now is None else now
    where, params = _where(query, ids, as_of if as_of is not None else current)
    total = 0
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        (count,) = await store.execute(
            [
                (
                    "UPDATE deliveries SET status = 'pending', next_attempt_at = ?, "  # noqa: S608
                    "lease_token = NULL, created_at = ?, updated_at = ? WHERE id IN "
                    f"(SELECT id FROM deliveries WHERE {where} LIMIT ?)",
                    [current, current, current, *params, REPLAY_CHUNK],
                )
            ]
        )
        total += count
        if progress is not None:
            progress(count)
        if count < REPLAY_CHUNK:
            break
        # Lets other writers in between (a service beside this command): see
        # bridge.store.base.in_bounded_transactions.
        await pause_after_part(started)
    detail = {
        "requeued": total,
        "destination": query.destination,
        "error_class": query.error_class,
        "selected": len(ids) if ids is not None else "all matching",
    }
    await store.execute([audit_statement(actor, "bulk_replay", query.destination, detail)])
    return total
