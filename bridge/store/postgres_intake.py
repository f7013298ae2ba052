"""PostgreSQL intake: concurrent ``ingest`` calls committed together.

A group commit (:mod:`bridge.groupcommit`) takes whatever requests have queued
since its previous commit (at most ``max_batch``) and writes them in ONE
statement, so one round trip and one WAL flush serve the whole group, however
many leads each request holds (docs/scaling.md: why one statement). Each
request is answered only after that commit. Leads are inserted sorted by id so two
replicas inserting overlapping groups lock in the same order (no deadlock), and
duplicates are settled by the primary key (``ON CONFLICT DO NOTHING``): the
second insert of an id waits for the first transaction, then sees a duplicate.
Tombstoned ids (erased leads) count as duplicates. A group that fails for a
reason other than the database being unreachable is retried request by
request, so one bad request does not fail its neighbours.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from bridge.errors import StoreError, StoreUnavailable
from bridge.groupcommit import GroupCommit
from bridge.logs import event
from bridge.store.base import IngestResult, LeadIn, QuarantineIn
from bridge.store.search import SearchHasher

log = logging.getLogger("lead_bridge.store")

Connect = Callable[[], AbstractAsyncContextManager[Any]]


# Parameters go in binary (%b): psycopg quotes text arrays in Python, with a
# regular expression per element, which cost the event loop ~5x more than the
# binary form for ten-lead payloads (bench/pg_intake_forms.py, docs/scaling.md).
# A tombstoned id (an erased lead) is not inserted: it counts as a duplicate.
INSERT_GROUP = (
    "WITH l AS (INSERT INTO leads (id, received_at, created, url, payload, "
    "email_hash, phone_hash) "
    "SELECT * FROM unnest(%b::text[], %b::float8[], %b::text[], %b::text[], "
    "%b::text[], %b::bytea[], %b::bytea[]) AS n (id, r, c, u, p, e, h) "
    "WHERE NOT EXISTS (SELECT 1 FROM erased_leads t WHERE t.id = n.id) "
    "ON CONFLICT (id) DO NOTHING RETURNING id), "
    "d AS (INSERT INTO deliveries (lead_id, destination, status, created_at, "
    "next_attempt_at, updated_at) SELECT u.l, u.d, 'pending', u.n, u.n, u.n "
    "FROM unnest(%b::text[], %b::text[], %b::float8[]) AS u (l, d, n) "
    "JOIN l ON l.id = u.l), "
    "q AS (INSERT INTO quarantine (received_at, reason, lead_id, item_index, raw) "
    "SELECT * FROM unnest(%b::float8[], %b::text[], %b::text[], %b::int8[], "
    "%b::text[])) "
    "SELECT id FROM l"
)


def _strip_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; quarantine keeps what it can show instead of
    # failing the whole request (and losing the other items) over one byte.
    return value.replace("\x00", "\\u0000")


@dataclass
class _IngestOp:
    leads: Sequence[LeadIn]
    destinations: Sequence[str]
    quarantine: Sequence[QuarantineIn]
    now: float
    result: IngestResult = field(default_factory=IngestResult)


class GroupWriter:
    """The intake writer of one :class:`~bridge.store.postgres.PostgresStore`."""

    def __init__(
        self, connect: Connect, hasher: Callable[[], SearchHasher | None], max_batch: int
    ) -> None:
        self.connect = connect
        self.hasher = hasher
        self.max_batch = max_batch
        self._group: GroupCommit[_IngestOp, IngestResult] | None = None

    @property
    def running(self) -> bool:
        return self._group is not None and not self._group.closed

    def start(self) -> None:
        self._group = GroupCommit(
            self._commit,
            refuse=StoreUnavailable,
            name="the PostgreSQL intake writer",
            max_items=self.max_batch,
        )

    async def stop(self) -> None:
        if self._group is not None:
            await self._group.close()  # after committing what is already queued

    async def ingest(
        self,
        leads: Sequence[LeadIn],
        destinations: Sequence[str],
        quarantine: Sequence[QuarantineIn],
        now: float,
    ) -> IngestResult:
        group = self._group
        if group is None or group.closed:
            raise StoreUnavailable("the store is closed")
        for lead in leads:
            if "\x00" in f"{lead.id}{lead.payload}{lead.created or ''}{lead.url or ''}":
                raise StoreError(f"lead {lead.id!r} contains a NUL character")
        return await group.submit(_IngestOp(leads, destinations, quarantine, now))

    async def _commit(self, batch: list[_IngestOp]) -> list[IngestResult | BaseException]:
        try:
            await self._insert(batch)
        except StoreUnavailable:
            event(log, "commit_failed", logging.ERROR, backend="postgres", size=len(batch))
            raise  # for every request of the batch
        except Exception as exc:
            if len(batch) > 1:
                # One bad request must not fail its neighbours: commit them one by one.
                return [await self._commit_alone(op) for op in batch]
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"{type(exc).__name__}: {exc}") from exc
        return [op.result for op in batch]

    async def _commit_alone(self, op: _IngestOp) -> IngestResult | BaseException:
        try:
            (result,) = await self._commit([op])
        except StoreError as exc:
            return exc
        return result

    async def _insert(self, batch: list[_IngestOp]) -> None:
        first = _first_of_each(batch)
        ids = sorted(first)
        rows = [first[i] for i in ids]
        # One statement, so one round trip and one implicit transaction: the leads,
        # the deliveries of the leads actually inserted (the foreign key is checked
        # at the end of the statement) and the quarantine rows.
        async with self.connect() as conn:
            cur = await conn.execute(
                INSERT_GROUP,
                (
                    *_lead_columns(ids, rows, self.hasher()),
                    *_delivery_columns(ids, rows),
                    *_quarantine_columns(batch),
                ),
            )
            accepted = {r[0] for r in await cur.fetchall()}
        for op in batch:
            for lead in op.leads:
                # By identity: two requests in one group may carry equal leads.
                first_op, first_lead = first[lead.id]
                mine = first_op is op and first_lead is lead and lead.id in accepted
                (op.result.accepted if mine else op.result.duplicates).append(lead.id)


_Row = tuple[_IngestOp, LeadIn]


def _first_of_each(batch: list[_IngestOp]) -> dict[str, _Row]:
    """Each lead id's first occurrence in the group (later ones are duplicates);
    clears the results of an earlier try of the same requests."""
    first: dict[str, _Row] = {}
    for op in batch:
        op.result = IngestResult()
        for lead in op.leads:
            first.setdefault(lead.id, (op, lead))
    return first


def _lead_columns(
    ids: list[str], rows: list[_Row], hasher: SearchHasher | None
) -> tuple[list[Any], ...]:
    hashes = [hasher.payload(lead.payload) if hasher else (None, None) for _, lead in rows]
    return (
        ids,
        [op.now for op, _ in rows],
        [lead.created for _, lead in rows],
        [lead.url for _, lead in rows],
        [lead.payload for _, lead in rows],
        [e for e, _ in hashes],
        [p for _, p in hashes],
    )


def _delivery_columns(ids: list[str], rows: list[_Row]) -> tuple[list[Any], ...]:
    deliveries = [
        (lid, d, op.now) for lid, (op, _) in zip(ids, rows, strict=True) for d in op.destinations
    ]
    return (
        [lid for lid, _, _ in deliveries],
        [d for _, d, _ in deliveries],
        [n for _, _, n in deliveries],
    )


def _quarantine_columns(batch: list[_IngestOp]) -> tuple[list[Any], ...]:
    quarantine = [(op.now, q) for op in batch for q in op.quarantine]
    return (
        [n for n, _ in quarantine],
        [_strip_nul(q.reason) for _, q in quarantine],
        [_strip_nul(q.lead_id) if q.lead_id else None for _, q in quarantine],
        [q.item_index for _, q in quarantine],
        [_strip_nul(q.raw) for _, q in quarantine],
    )
