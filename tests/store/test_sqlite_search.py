"""The search index's writes (bridge/store/sqlite_search.py), on a plain connection (no writer process)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.store.base import LeadIn
from bridge.store.search import SearchHasher, normalise_email, normalise_phone, search_values
from bridge.store.sqlite_ingest import Ingest, lead_rows, prepare_body, run_ingests
from bridge.store.sqlite_schema import connect, migrate
from bridge.store.sqlite_search import index_search, reset_search_watermark, set_search_key

T0 = 1_700_000_000.0


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = connect(tmp_path / "w.db", "FULL")
    migrate(c)
    yield c
    c.close()


def commit(conn: sqlite3.Connection, *requests: Ingest) -> list[tuple[list[str], list[str]]]:
    conn.execute("BEGIN IMMEDIATE")
    results = run_ingests(conn, requests)
    conn.execute("COMMIT")
    return [(r.accepted, r.duplicates) for r in results]


# Leads whose email and phone the search index normalises: odd spacing and
# case, a phone as an integer, no data at all, values that index nothing.
SEARCH_LEADS = [
    {"id": "s1", "data": {"email": "  Ann.Smith@Example.COM ", "phone": " +1 (555) 010-0000 "}},
    {"id": "s2", "data": {"phone": 15550100001}},
    {"id": "s3"},
    {"id": "s4", "data": {}},
    {"id": "s5", "data": {"email": "", "phone": "n/a"}},
    {"id": "s6", "data": {"email": "Zoë@Example.org", "phone": "٣٤٥ 0049-30 1234"}},
    {"id": "s7", "data": {"email": 42, "phone": True}},
    {"id": "s8", "data": {"email": "b@x.io", "phone": 1.5}},
]
SEARCH_KEY = b"k" * 32


def reference_hashes(lead: dict[str, Any]) -> tuple[bytes | None, bytes | None]:
    """The documented construction, computed without SearchHasher."""
    mac_key = hashlib.blake2b(SEARCH_KEY, digest_size=64).digest()

    def mac(kind: bytes, text: str | None) -> bytes | None:
        if text is None:
            return None
        return hashlib.blake2b(kind + text.encode(), key=mac_key, digest_size=16).digest()

    email, phone = search_values(lead)
    return mac(b"email:", normalise_email(email)), mac(b"phone:", normalise_phone(phone))


def stored_hashes(conn: sqlite3.Connection) -> dict[str, tuple[bytes | None, bytes | None]]:
    rows = conn.execute("SELECT id, email_hash, phone_hash FROM leads").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def index_entries(conn: sqlite3.Connection) -> set[tuple[bytes, str]]:
    return set(conn.execute("SELECT hash, lead_id FROM lead_search").fetchall())


def expected_entries(
    hashes: dict[str, tuple[bytes | None, bytes | None]],
) -> set[tuple[bytes, str]]:
    return {(h, lid) for lid, pair in hashes.items() for h in pair if h is not None}


@pytest.fixture
def reparses(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """Every parse of a stored payload's text for the search index."""
    calls: list[str | None] = []
    original = SearchHasher.payload

    def counted(self: SearchHasher, payload: str | None) -> tuple[bytes | None, bytes | None]:
        calls.append(payload)
        return original(self, payload)

    monkeypatch.setattr(SearchHasher, "payload", counted)
    return calls


def index(conn: sqlite3.Connection, hasher: SearchHasher | None = None) -> int:
    conn.execute("BEGIN IMMEDIATE")
    done = index_search(conn, 1000, hasher)
    conn.execute("COMMIT")
    return done


def test_intake_commits_no_hashes_the_index_batch_computes_them(
    conn: sqlite3.Connection, reparses: list[str | None]
) -> None:
    set_search_key(conn, SEARCH_KEY)
    # A raw body (its values kept by the writer) and Store.ingest's leads (no
    # parsed body: their payloads are parsed at index time).
    leads = [LeadIn(str(lead["id"]), json.dumps(lead)) for lead in SEARCH_LEADS[:4]]
    body = json.dumps(SEARCH_LEADS[4:]).encode()
    commit(conn, Ingest(lead_rows(leads, T0), ("crm",), [], T0), prepare_body(body, ("crm",), T0))
    assert index_entries(conn) == set()  # nothing on the commit path
    assert set(stored_hashes(conn).values()) == {(None, None)}
    assert index(conn) == len(SEARCH_LEADS)
    expected = {str(lead["id"]): reference_hashes(lead) for lead in SEARCH_LEADS}
    assert index_entries(conn) == expected_entries(expected)
    assert len(reparses) == 4  # only the leads whose body the writer did not parse
    hasher = SearchHasher(SEARCH_KEY)
    assert expected["s1"][0] == hasher.email("ann.smith@example.com")
    assert expected["s1"][1] == hasher.phone("15550100000")
    assert expected["s2"][1] == hasher.phone("1 555 010 0001")
    assert expected["s6"][1] == hasher.phone("0049301234")  # ASCII digits only
    assert expected["s3"] == expected["s4"] == expected["s5"] == expected["s7"] == (None, None)
    assert index(conn) == 0  # the watermark moved


def test_the_index_parses_payloads_the_writer_kept_no_values_for(
    conn: sqlite3.Connection, reparses: list[str | None]
) -> None:
    set_search_key(conn, SEARCH_KEY)
    conn.search_backlog.limit = 3  # type: ignore[attr-defined]
    for lead in SEARCH_LEADS:  # one request each: the first three are kept
        commit(conn, prepare_body(json.dumps([lead]).encode(), ("crm",), T0))
    # Leads erased before their batch, their rowids taken again by other leads:
    # s6 gets s2's rowid, s8 s3's.
    conn.execute("DELETE FROM deliveries WHERE lead_id <> 's1'")
    conn.execute("DELETE FROM leads WHERE id <> 's1'")
    again = [lead for lead in SEARCH_LEADS if lead["id"] in ("s6", "s8")]
    commit(conn, prepare_body(json.dumps(again).encode(), ("crm",), T0))
    index(conn)
    expected = {str(lead["id"]): reference_hashes(lead) for lead in [SEARCH_LEADS[0], *again]}
    assert index_entries(conn) == expected_entries(expected)
    assert [json.loads(p or "") for p in reparses] == again


def test_a_new_key_indexes_every_lead_again(conn: sqlite3.Connection) -> None:
    set_search_key(conn, SEARCH_KEY)
    commit(conn, prepare_body(json.dumps(SEARCH_LEADS).encode(), ("crm",), T0))
    index(conn)
    other = SearchHasher(b"o" * 32)
    conn.execute("BEGIN IMMEDIATE")
    reset_search_watermark(conn)
    conn.execute("COMMIT")
    assert index(conn, other) == len(SEARCH_LEADS)
    expected = {str(lead["id"]): other.lead(lead) for lead in SEARCH_LEADS}
    assert index_entries(conn) == expected_entries(expected)


def test_without_a_key_nothing_is_indexed(conn: sqlite3.Connection) -> None:
    commit(conn, prepare_body(json.dumps(SEARCH_LEADS).encode(), ("crm",), T0))
    assert index(conn) == 0
    assert index_entries(conn) == set()
