"""Erasure: what matches a person, the plan of what goes, and its chunks.

An e-mail address matches a stored text when one of its JSON string values (or
keys) *is* that address, case and surrounding space aside, or holds it as a
whole word ("write to ann@x.io today"); text that is not JSON is searched for
the whole word. ``joann@x.io`` and ``ann@x.io.example`` are other addresses and
never match ``ann@x.io``. Leads, quarantined bodies, attempt errors and
delivery errors are all matched by :class:`AddressMatcher`.

A backend builds an :class:`ErasePlan` with reads only (the preview counts come
from it) and carries it out one :class:`ErasePart` per transaction, so an
erasure of thousands of leads never holds the database for long.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.models import EraseReport

# What another lead's stored error becomes when it quoted the address.
ERASED_ERROR = "[erased: contained personal data]"
# Lead ids (and quarantine rows, attempts, errors) removed per transaction.
CHUNK = 200

# Characters that can continue an address's local part to the left, or its
# domain to the right: next to one of them the needle is part of another address.
_LOCAL_CHAR = r"[\w.!#$%&'*+/=?^`{|}~-]"
_MIN_PREFILTER = 3


def normalize_email(email: str) -> str:
    return email.strip().lower()


class AddressMatcher:
    """Exact matching of one e-mail address in stored text."""

    def __init__(self, email: str) -> None:
        self.needle = normalize_email(email)
        self._word = re.compile(
            rf"(?<!{_LOCAL_CHAR}){re.escape(self.needle)}(?![\w-]|\.[\w-])", re.UNICODE
        )

    @property
    def prefilter(self) -> str | None:
        """A lower-case ASCII piece of the address every matching text contains
        (databases lower-case ASCII alike), for a cheap ``instr``/``strpos``
        before the exact check; None when the address has no usable piece."""
        runs = re.findall(r"[\x00-\x7f]+", self.needle)
        best = max(runs, key=len, default="")
        return best if len(best) >= _MIN_PREFILTER else None

    def in_text(self, text: str | None) -> bool:
        """The address as a whole word of free text (an error message, a body
        that is not JSON)."""
        if not text:
            return False
        return self._word.search(text.lower()) is not None

    def in_value(self, value: str) -> bool:
        lowered = value.strip().lower()
        return lowered == self.needle or self._word.search(lowered) is not None

    def in_json(self, text: str | None) -> bool:
        """Does any string of the JSON document (values and keys) hold the address?"""
        if not text:
            return False
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            return self.in_text(text)
        stack: list[Any] = [document]
        while stack:
            node = stack.pop()
            if isinstance(node, str):
                if self.in_value(node):
                    return True
            elif isinstance(node, dict):
                stack.extend(node.keys())
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
        return False


@dataclass
class EraseTargets:
    """The rows an erasure removes or scrubs, by id."""

    lead_ids: list[str] = field(default_factory=list)
    quarantine_ids: list[int] = field(default_factory=list)
    attempt_ids: list[int] = field(default_factory=list)  # other leads' attempts quoting it
    scrub_ids: list[int] = field(default_factory=list)  # other leads' deliveries quoting it

    @property
    def size(self) -> int:
        return (
            len(self.lead_ids)
            + len(self.quarantine_ids)
            + len(self.attempt_ids)
            + len(self.scrub_ids)
        )


@dataclass
class ErasePart(EraseTargets):
    """What one transaction removes (each list at most a chunk long)."""


@dataclass
class ErasePlan(EraseTargets):
    """Everything one erasure removes, found with reads only (``lead_ids`` sorted)."""

    deliveries: int = 0  # delivery rows of those leads
    lead_attempts: int = 0  # attempt rows of those leads

    def report(self) -> EraseReport:
        """What :meth:`Store.erase` would report (the preview)."""
        return EraseReport(
            leads=len(self.lead_ids),
            deliveries=self.deliveries,
            attempts=self.lead_attempts + len(self.attempt_ids),
            quarantine=len(self.quarantine_ids),
            errors_scrubbed=len(self.scrub_ids),
            lead_ids=list(self.lead_ids),
        )

    def parts(self, chunk: int = CHUNK) -> Iterator[ErasePart]:
        """The plan in transactions of at most ``chunk`` items of each kind."""
        longest = max(
            len(self.lead_ids), len(self.quarantine_ids), len(self.attempt_ids), len(self.scrub_ids)
        )
        for start in range(0, longest, chunk):
            end = start + chunk
            yield ErasePart(
                self.lead_ids[start:end],
                self.quarantine_ids[start:end],
                self.attempt_ids[start:end],
                self.scrub_ids[start:end],
            )


# One erasure part as both backends run it, in one transaction and in this
# order: (report field, statement, the part's ids it takes). ``{ids}`` is the
# backend's test of membership in a list (SQLite ``IN (?, ...)``, PostgreSQL
# ``= ANY(%s)``), ``{mark}`` its placeholder. Children go before their lead.
ERASE_BEFORE_LEADS = (
    ("attempts", "DELETE FROM attempts WHERE lead_id {ids}", "lead_ids"),
    ("attempts", "DELETE FROM attempts WHERE id {ids}", "attempt_ids"),
    ("deliveries", "DELETE FROM deliveries WHERE lead_id {ids}", "lead_ids"),
)
# The leads themselves (what each backend does with the deleted rows differs:
# SQLite also drops their search entries, from the payloads it returns).
ERASE_LEADS = "DELETE FROM leads WHERE id {ids} RETURNING id"
ERASE_AFTER_LEADS = (
    ("quarantine", "DELETE FROM quarantine WHERE id {ids}", "quarantine_ids"),
    # other leads' delivery errors that quoted the address: parameters ERASED_ERROR, ids
    ("errors_scrubbed", "UPDATE deliveries SET last_error = {mark} WHERE id {ids}", "scrub_ids"),
)


Step = tuple[str, list[Any], Callable[[Sequence[Sequence[Any]]], None]]

_PAGE = 500
# Rows read per statement when looking for the address in a whole table.
_SCAN = 5000


class PlanBuilder:
    """The reads that build an :class:`ErasePlan`, for either backend.

    :meth:`steps` yields ``(sql, params, take)``: the backend runs the query
    and hands all its rows to ``take``. Later queries depend on earlier rows
    (the lead ids found), so the steps are produced lazily. ``mark`` is the
    backend's placeholder, ``find`` its substring function (``instr`` or
    ``strpos``, both ``(haystack, needle)``).
    """

    def __init__(self, email: str | None, lead_id: str | None, *, mark: str, find: str) -> None:
        self.matcher = AddressMatcher(email) if email is not None else None
        self.lead_id = lead_id
        self.mark = mark
        self.find = find
        self.ids: set[str] = set()
        self.plan = ErasePlan()
        self._last_quarantine = 0
        self._more_quarantine = True

    def _marks(self, count: int) -> str:
        return ",".join([self.mark] * count)

    def _quoting(self, column: str) -> tuple[str, list[Any]]:
        """Rows whose ``column`` may quote the address (checked exactly in Python)."""
        assert self.matcher is not None
        pre = self.matcher.prefilter
        if pre is None:
            return f"{column} IS NOT NULL", []
        return f"{self.find}(lower({column}), {self.mark}) > 0", [pre]

    def steps(self) -> Iterator[Step]:
        m = self.mark
        if self.lead_id is not None:
            yield f"SELECT id FROM leads WHERE id = {m}", [self.lead_id], self._take_ids  # noqa: S608
        if self.matcher is not None:
            yield from self._scan("leads", "id, payload", "payload", "", self._take_leads)
        ids = sorted(self.ids)
        self.plan.lead_ids = ids
        for start in range(0, len(ids), _PAGE):
            chunk = ids[start : start + _PAGE]
            marks = self._marks(len(chunk))
            yield (
                f"SELECT (SELECT count(*) FROM deliveries WHERE lead_id IN ({marks})), "  # noqa: S608
                f"(SELECT count(*) FROM attempts WHERE lead_id IN ({marks}))",
                [*chunk, *chunk],
                self._take_counts,
            )
        while self._more_quarantine:
            yield (
                f"SELECT id, lead_id, raw FROM quarantine WHERE id > {m} ORDER BY id LIMIT {m}",  # noqa: S608
                [self._last_quarantine, _PAGE],
                self._take_quarantine,
            )
        if self.matcher is not None:
            yield from self._scan("attempts", "id, lead_id, error", "error", 0, self._take_attempts)
            yield from self._scan(
                "deliveries", "id, lead_id, last_error", "last_error", 0, self._take_errors
            )

    def _scan(
        self,
        table: str,
        columns: str,
        column: str,
        start: str | int,
        take: Callable[[Sequence[Sequence[Any]]], None],
    ) -> Iterator[Step]:
        """The rows of ``table`` whose ``column`` may quote the address, read
        ``_SCAN`` rows per statement in id order: on a table of millions of rows
        no statement scans (or holds a snapshot over) the whole table. Each
        statement answers at least one row: the page's last id and size, then
        the page's candidate rows (NULLs when it has none)."""
        m = self.mark
        cond, params = self._quoting(column)
        query = (
            f"WITH page AS (SELECT {columns} FROM {table} WHERE id > {m} "  # noqa: S608
            f"ORDER BY id LIMIT {m}) "
            "SELECT last.id, last.n, hit.* FROM (SELECT max(id) AS id, count(*) AS n FROM page) "
            f"AS last LEFT JOIN (SELECT {columns} FROM page WHERE {cond}) AS hit ON 1 = 1 "
            "ORDER BY hit.id"
        )
        after: str | int | None = start
        while after is not None:
            found: list[Sequence[Any]] = []
            yield query, [after, _SCAN, *params], found.extend
            (last, scanned, *_), *_ = found
            take([row[2:] for row in found if row[2] is not None])
            after = last if scanned == _SCAN else None

    def _take_ids(self, rows: Sequence[Sequence[Any]]) -> None:
        self.ids.update(r[0] for r in rows)

    def _take_leads(self, rows: Sequence[Sequence[Any]]) -> None:
        assert self.matcher is not None
        self.ids.update(lid for lid, payload in rows if self.matcher.in_json(payload))

    def _take_counts(self, rows: Sequence[Sequence[Any]]) -> None:
        ((deliveries, attempts),) = rows
        self.plan.deliveries += deliveries
        self.plan.lead_attempts += attempts

    def _take_quarantine(self, rows: Sequence[Sequence[Any]]) -> None:
        self._more_quarantine = len(rows) == _PAGE
        for qid, lead_id, raw in rows:
            self._last_quarantine = qid
            by_id = lead_id is not None and (lead_id in self.ids or lead_id == self.lead_id)
            if by_id or (self.matcher is not None and self.matcher.in_json(raw)):
                self.plan.quarantine_ids.append(qid)

    def _quoted(self, rows: Sequence[Sequence[Any]]) -> list[int]:
        assert self.matcher is not None
        return [
            rid
            for rid, lead_id, text in rows
            if lead_id not in self.ids and self.matcher.in_text(text)
        ]

    def _take_attempts(self, rows: Sequence[Sequence[Any]]) -> None:
        self.plan.attempt_ids += self._quoted(rows)

    def _take_errors(self, rows: Sequence[Sequence[Any]]) -> None:
        self.plan.scrub_ids += self._quoted(rows)
