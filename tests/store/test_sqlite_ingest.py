"""Intake's writes (bridge/store/sqlite_ingest.py), on a plain connection (no writer process)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.store.base import LeadIn
from bridge.store.sqlite_ingest import (
    LEAD_FIELDS,
    STATEMENT_ROWS,
    Ingest,
    lead_rows,
    run_ingests,
    statement_sizes,
)
from bridge.store.sqlite_schema import connect, migrate

T0 = 1_700_000_000.0


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = connect(tmp_path / "w.db", "FULL")
    migrate(c)
    yield c
    c.close()


def ingest(ids: list[str], destinations: tuple[str, ...] = ("crm",), now: float = T0) -> Ingest:
    leads = [LeadIn(i, f'{{"id":"{i}"}}', "2024-01-01T00:00:00Z", "https://x.test/") for i in ids]
    rows = lead_rows(leads, now)
    assert len(rows) == LEAD_FIELDS * len(ids)
    return Ingest(rows, destinations, [], now)


def commit(conn: sqlite3.Connection, *requests: Ingest) -> list[tuple[list[str], list[str]]]:
    conn.execute("BEGIN IMMEDIATE")
    results = run_ingests(conn, requests)
    conn.execute("COMMIT")
    return [(r.accepted, r.duplicates) for r in results]


def deliveries(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    return conn.execute("SELECT lead_id, destination FROM deliveries ORDER BY id").fetchall()


def delivery_rows(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
    return conn.execute(
        "SELECT lead_id, destination, status, attempts, created_at, next_attempt_at, "
        "updated_at, lease_token FROM deliveries ORDER BY lead_id, destination"
    ).fetchall()


@pytest.mark.parametrize(
    ("rows", "sizes"),
    [
        (0, []),
        (1, [1]),
        (10, [8, 2]),
        (270, [256, 8, 4, 2]),
        (640, [256, 256, 128]),
        (1023, [256, 256, 256, 128, 64, 32, 16, 8, 4, 2, 1]),
    ],
)
def test_statement_sizes_are_powers_of_two_up_to_the_cap(rows: int, sizes: list[int]) -> None:
    assert statement_sizes(rows, 256) == sizes
    assert sum(sizes) == rows


def test_a_batch_without_duplicates_accepts_every_lead(conn: sqlite3.Connection) -> None:
    ids = [f"led_{i:04d}" for i in range(STATEMENT_ROWS + 14)]  # several statements
    results = commit(conn, ingest(ids[:100]), ingest(ids[100:], ("crm", "slack")))
    assert results == [(ids[:100], []), (ids[100:], [])]
    assert sorted(deliveries(conn)) == sorted(
        [(i, "crm") for i in ids[:100]] + [(i, d) for i in ids[100:] for d in ("crm", "slack")]
    )


def test_duplicates_of_stored_leads_and_within_the_batch_are_told_apart(
    conn: sqlite3.Connection,
) -> None:
    commit(conn, ingest(["old_1", "old_2"]))
    results = commit(
        conn,
        ingest(["new_1", "old_1", "new_1"]),  # a stored one and a repeat in the same request
        ingest(["new_2", "new_1", "old_2"]),  # a repeat of the other request's lead
        ingest([f"bulk_{i}" for i in range(300)] + ["new_2"]),
    )
    assert results == [
        (["new_1"], ["old_1", "new_1"]),
        (["new_2"], ["new_1", "old_2"]),
        ([f"bulk_{i}" for i in range(300)], ["new_2"]),
    ]
    stored = [r[0] for r in conn.execute("SELECT id FROM leads ORDER BY rowid")]
    assert stored == ["old_1", "old_2", "new_1", "new_2", *(f"bulk_{i}" for i in range(300))]
    # One delivery row per accepted lead, none for a duplicate.
    assert [lead for lead, _ in deliveries(conn)] == stored


def test_new_leads_are_found_after_rows_were_deleted(conn: sqlite3.Connection) -> None:
    commit(conn, ingest(["a", "b", "c"]))
    conn.execute("DELETE FROM leads WHERE id = 'c'")  # the largest rowid goes
    assert commit(conn, ingest(["d", "a", "c"])) == [(["d", "c"], ["a"])]


def test_outbox_rows_are_the_same_whether_destinations_differ_or_not(
    tmp_path: Path,
) -> None:
    """One list of destinations for the whole batch takes a shortcut (rows made
    by SQL from the leads just inserted); different lists per request do not.
    Both give the same rows: pending, due at once, no attempt, no lease."""
    same, mixed = (connect(tmp_path / f"{name}.db", "FULL") for name in ("same", "mixed"))
    for c in (same, mixed):
        migrate(c)
        commit(c, ingest(["old"]))
    commit(
        same, ingest(["a", "old", "b"], ("crm", "slack")), ingest(["c"], ("crm", "slack"), T0 + 1)
    )
    commit(
        mixed, ingest(["a", "old", "b"], ("crm", "slack")), ingest(["c"], ("slack", "crm"), T0 + 1)
    )
    expected = [
        (lead, dest, "pending", 0, t, t, t, None)
        for lead, t in (("a", T0), ("b", T0), ("c", T0 + 1))
        for dest in ("crm", "slack")
    ]
    expected.append(("old", "crm", "pending", 0, T0, T0, T0, None))
    for c in (same, mixed):
        assert delivery_rows(c) == sorted(expected)
        c.close()


def test_a_tombstoned_id_is_a_duplicate_only_where_tombstones_exist(
    conn: sqlite3.Connection,
) -> None:
    assert commit(conn, ingest(["a"])) == [(["a"], [])]
    conn.execute("INSERT INTO erased_leads (id, erased_at) VALUES ('gone', ?)", (T0,))
    assert commit(conn, ingest(["gone", "b"])) == [(["b"], ["gone"])]
    assert conn.execute("SELECT id FROM leads ORDER BY rowid").fetchall() == [("a",), ("b",)]
    assert deliveries(conn) == [("a", "crm"), ("b", "crm")]
