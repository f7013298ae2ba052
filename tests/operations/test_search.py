"""Search: the keyed-hash index finds leads by email and phone on both backends,
and is covered by erase, retention and a key change."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.operations.search import BadQuery, LeadQuery, search_leads
from bridge.store.base import Store
from bridge.store.search import SearchHasher, normalise_phone
from bridge.store.sqlite import SQLiteStore
from tests.operations.helpers import T0, add_leads, finish_all, lead
from tests.waiting import eventually


async def ids(store: Store, **query: object) -> list[str]:
    page = await search_leads(store, LeadQuery(**query))  # type: ignore[arg-type]
    return [s.id for s in page.leads]


async def test_email_and_phone_found_through_the_index(store: Store) -> None:
    await add_leads(
        store,
        [
            lead("led_a", email="John.Doe@Example.com", phone="+1 (555) 010-0000"),
            lead("led_b", email="jane@example.com", phone="15550100001"),
            lead("led_c", email="john.doe@example.com", phone=None),
        ],
        ["crm"],
    )
    assert await ids(store, email="  JOHN.DOE@example.COM ") == ["led_c", "led_a"]
    assert await ids(store, phone="1-555-010-0000") == ["led_a"]
    assert await ids(store, email="john.doe@example.com", phone="15550100000") == ["led_a"]
    assert await ids(store, email="nobody@example.com") == []
    # no address in clear anywhere in the index
    if store.dialect == "sqlite":
        rows = await store.fetch("SELECT hash FROM lead_search WHERE lead_id = ?", ["led_a"])
        hashes = [r[0] for r in rows]
    else:
        rows = await store.fetch("SELECT email_hash, phone_hash FROM leads WHERE id = ?", ["led_a"])
        hashes = list(rows[0])
    assert len(hashes) == 2
    assert all(isinstance(v, bytes) and len(v) == 16 and b"example" not in v for v in hashes)


async def test_filters_and_stable_cursor(store: Store) -> None:
    await add_leads(store, [lead(f"led_{i:02d}") for i in range(5)], ["crm", "chat"], now=T0)
    await add_leads(
        store, [lead(f"led_{i:02d}") for i in range(5, 8)], ["crm", "chat"], now=T0 + 60
    )
    await finish_all(
        store, "crm", status="dead", only=["led_01", "led_06"], error="HTTP 400", now=T0 + 60
    )
    await finish_all(store, "chat", status="pending", only=["led_02"], now=T0 + 61, error="x")

    assert await ids(store, status="dead") == ["led_06", "led_01"]
    assert await ids(store, status="dead", received_to=T0 + 1) == ["led_01"]
    assert await ids(store, status="retrying") == ["led_02"]
    assert await ids(store, status="dead", destination="chat") == []
    assert await ids(store, lead_id="led_03") == ["led_03"]

    first = await search_leads(store, LeadQuery(), limit=3)
    assert [s.id for s in first.leads] == ["led_07", "led_06", "led_05"]
    assert first.total == 8 and not first.total_capped
    assert first.leads[1].deliveries == {"crm": "dead", "chat": "pending"}
    # a newer lead arriving between pages does not shift the next page
    await add_leads(store, [lead("led_99")], ["crm"], now=T0 + 120)
    second = await search_leads(store, LeadQuery(), limit=3, cursor=first.next_cursor)
    assert [s.id for s in second.leads] == ["led_04", "led_03", "led_02"]
    last = await search_leads(store, LeadQuery(), limit=3, cursor=second.next_cursor)
    assert [s.id for s in last.leads] == ["led_01", "led_00"] and last.next_cursor is None


async def test_bad_queries_are_named(store: Store) -> None:
    with pytest.raises(BadQuery, match="status"):
        await search_leads(store, LeadQuery(status="lost"))
    with pytest.raises(BadQuery, match="cursor"):
        await search_leads(store, LeadQuery(), cursor="!!")
    with pytest.raises(BadQuery, match="phone: nothing to search for"):
        await search_leads(store, LeadQuery(phone="call me"))


async def test_erase_retention_and_clear_drop_the_hashes(store: Store) -> None:
    await add_leads(
        store,
        [lead("led_x", email="x@example.com"), lead("led_y", email="y@example.com")],
        ["crm"],
    )
    await store.erase(lead_id="led_x")
    assert await ids(store, email="x@example.com") == []
    await finish_all(store, "crm")
    assert await store.purge_payloads(before=T0 + 1) == 1
    assert await ids(store, email="y@example.com") == []
    await add_leads(store, [lead("led_z", email="z@example.com")], ["crm"])
    assert await store.clear_search_index(["led_z", "led_missing"]) == 1
    assert await ids(store, email="z@example.com") == []
    assert await ids(store, lead_id="led_z") == ["led_z"]


async def test_key_change_rebuilds_the_index(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    first = SQLiteStore(url)  # generated key, kept in the database
    await first.open()
    await add_leads(first, [lead("led_k", email="k@example.com", phone="123")], ["crm"])
    generated = first.search
    await first.close()

    again = SQLiteStore(url)
    await again.open()
    assert again.search is not None and generated is not None
    assert again.search.fingerprint == generated.fingerprint  # the same stored key
    await again.close()

    configured = SQLiteStore(url, search_key="a configured key of 32 characters")
    await configured.open()
    try:
        assert configured.search is not None
        assert configured.search.fingerprint != generated.fingerprint
        assert await ids(configured, email="k@example.com") == ["led_k"]
        assert await ids(configured, phone="1 2 3") == ["led_k"]
        stored = await configured.fetch("SELECT name FROM settings WHERE name = 'search_key'")
        assert stored == []  # the generated key is gone
    finally:
        await configured.close()


def test_hasher_is_keyed_blake2b() -> None:
    import hashlib

    for key in (b"k" * 32, b"x" * 100):
        mac_key = hashlib.blake2b(key, digest_size=64).digest()
        expected = hashlib.blake2b(b"email:a@b.c", key=mac_key, digest_size=16).digest()
        assert SearchHasher(key).email("A@B.c") == expected
        assert SearchHasher(key + b"!").email("a@b.c") != expected


def test_hasher_normalises_and_separates_kinds() -> None:
    h = SearchHasher(b"k" * 32)
    assert h.email(" A@B.c ") == h.email("a@b.c")
    assert h.phone("+1 (555) 010") == h.phone("1555010") == h.phone(1555010)
    assert h.email("1555010") != h.phone("1555010")
    assert h.email("") is None and h.phone("n/a") is None and h.email(42) is None
    assert normalise_phone("٣٤٥") is None  # other scripts' digits are not phone digits
    assert h.payload('{"id":"x","data":{"email":"a@b.c","n":NaN}}')[0] == h.email("a@b.c")


async def test_a_restarted_sqlite_writer_still_indexes(tmp_path: Path) -> None:
    import os
    import signal

    from tests.store.test_sqlite_writer import wait_for

    store = SQLiteStore(f"sqlite:///{tmp_path / 'w.db'}")
    await store.open()
    try:
        await add_leads(store, [lead("led_1", email="one@example.com")], ["crm"])
        old = store._writer
        assert old is not None and old.pid is not None
        os.kill(old.pid, signal.SIGKILL)
        await wait_for(lambda: not old.alive)
        await add_leads(store, [lead("led_2", email="two@example.com")], ["crm"])
        assert store._writer is not old
        assert await ids(store, email="two@example.com") == ["led_2"]
        assert await ids(store, email="one@example.com") == ["led_1"]
    finally:
        await store.close()


async def test_sqlite_index_batches_are_covered_by_erase_retention_and_clear(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'i.db'}")
    store.index_interval = 3600.0  # batches only when this test says
    await store.open()
    try:
        await add_leads(
            store,
            [
                lead(f"led_{c}", email=f"{c}@example.com", phone=f"4930{i}")
                for i, c in enumerate("abcd")
            ],
            ["crm"],
        )
        # Intake's commits leave the hashes out; a search indexes them first.
        assert await store.fetch("SELECT count(*) FROM lead_search") == [(0,)]
        assert await ids(store, email="a@example.com") == ["led_a"]
        assert await store.fetch("SELECT count(*) FROM lead_search") == [(8,)]
        assert await ids(store, phone="49301") == ["led_b"]
        assert await store._write("index_search", 1000) == 0

        await store.erase(lead_id="led_a")
        await finish_all(store, "crm", only=["led_b"])
        assert await store.purge_payloads(before=T0 + 1) == 1
        # led_e is not indexed yet when its hashes are cleared: no later batch indexes it.
        await add_leads(store, [lead("led_e", email="e@example.com")], ["crm"])
        assert await store.clear_search_index(["led_c", "led_e"]) == 2
        assert await store._write("index_search", 1000) == 0
        left = await store.fetch("SELECT lead_id FROM lead_search ORDER BY lead_id")
        assert left == [("led_d",), ("led_d",)]  # erase, retention and clear took theirs
        for gone in ("a", "b", "c", "e"):
            assert await ids(store, email=f"{gone}@example.com") == []
        assert await ids(store, email="d@example.com") == ["led_d"]
    finally:
        await store.close()


async def test_sqlite_email_search_plan_never_walks_every_lead(tmp_path: Path) -> None:
    from bridge.operations.search import _where

    store = SQLiteStore(f"sqlite:///{tmp_path / 'p.db'}")
    await store.open()
    try:
        where, params = _where(store, LeadQuery(email="a@example.com"), page=True)
        plan = await store.fetch(
            f"EXPLAIN QUERY PLAN SELECT l.id FROM leads l WHERE {where} "  # noqa: S608
            "ORDER BY l.received_at DESC, l.id DESC LIMIT ?",
            [*params, 51],
        )
        steps = [str(row[3]) for row in plan]
        assert any("rowid=?" in step for step in steps), steps
        assert not any(step.startswith("SCAN l") for step in steps), steps
    finally:
        await store.close()


@pytest.mark.postgres
async def test_postgres_key_change_rebuilds_in_chunks(
    make_pg: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import bridge.store.postgres as pg

    monkeypatch.setattr(pg, "REINDEX_CHUNK", 2)  # several chunks with five leads
    first = make_pg()
    await first.open()
    await add_leads(first, [lead(f"led_{i}", email=f"p{i}@example.com") for i in range(5)], ["crm"])
    await first.close()
    configured = make_pg(search_key="a configured key of 32 characters")
    await configured.open()
    for i in range(5):
        assert await ids(configured, email=f"P{i}@example.com") == [f"led_{i}"]


async def test_sqlite_indexer_yields_to_a_busy_writer_for_a_bounded_lag(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'y.db'}")
    store.index_interval = 0.01
    store.index_max_lag = 3600.0
    busy = True
    rounds = 0

    def writer_busy() -> bool:
        nonlocal rounds
        rounds += 1
        return busy

    store._writer_busy = writer_busy  # type: ignore[method-assign]
    await store.open()
    try:
        await add_leads(store, [lead("led_y", email="y@example.com")], ["crm"])
        await eventually(lambda: rounds >= 20, "twenty indexer rounds while the writer is busy")
        assert await store.fetch("SELECT count(*) FROM lead_search") == [(0,)]

        store.index_max_lag = 0.0  # the lag bound reached: one batch despite the busy writer
        await eventually(lambda: _indexed(store), "the lead indexed once the lag bound has passed")
        assert await ids(store, email="y@example.com") == ["led_y"]
    finally:
        await store.close()


async def _indexed(store: SQLiteStore) -> bool:
    return bool(await store.fetch("SELECT lead_id FROM lead_search WHERE lead_id = 'led_y'"))


async def test_sqlite_leads_left_unindexed_at_a_restart_are_indexed_in_the_background(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    first = SQLiteStore(url)
    first.index_interval = 3600.0  # nothing indexed before it closes
    await first.open()
    try:
        await add_leads(
            first,
            [lead(f"led_{i}", email=f"r{i}@example.com", phone=None) for i in range(3)],
            ["crm"],
        )
    finally:
        await first.close()
    second = SQLiteStore(url)
    second.index_interval = 0.01
    await second.open()  # not indexed while opening: the indexer does it
    try:
        await eventually(lambda: _count_search(second, 3), "the three leads indexed")
        assert await ids(second, email="r1@example.com") == ["led_1"]
    finally:
        await second.close()


async def _count_search(store: SQLiteStore, count: int) -> bool:
    return await store.fetch("SELECT count(*) FROM lead_search") == [(count,)]
