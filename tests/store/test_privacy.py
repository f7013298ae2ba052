"""Erasure (exact matching, tombstones, chunks, preview) and quarantine retention,
on every backend (see conftest.py)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from bridge.config import RetentionConfig
from bridge.intake import body_ingester
from bridge.metrics import Metrics
from bridge.retention import DAY, trim_quarantine
from bridge.store import erasure
from bridge.store.base import LeadIn, Outcome, QuarantineIn, Store
from bridge.store.erasure import ERASED_ERROR, AddressMatcher

T0 = 1_700_000_000.0


def lead(lead_id: str, email: str, **extra: Any) -> LeadIn:
    return LeadIn(lead_id, json.dumps({"id": lead_id, "data": {"email": email, **extra}}))


def body(*leads: tuple[str, str]) -> bytes:
    return json.dumps([{"id": i, "data": {"email": e}} for i, e in leads]).encode()


async def fail_all(store: Store, destination: str, error: str) -> None:
    claims = await store.claim(destination=destination, limit=100, lease_seconds=60, now=T0)
    await store.finish(
        [
            Outcome(c.delivery_id, c.lease_token, "dead", "dead", T0, 0.1, error=error)
            for c in claims
        ]
    )


# ---------------------------------------------------------------- exact matching


@pytest.mark.parametrize(
    ("text", "hit"),
    [
        ("ann@x.io", True),
        ("  ANN@X.IO ", True),
        ("HTTP 409: contact ann@x.io already exists", True),
        ("<ann@x.io>, bob@x.io", True),
        ("contact ann@x.io.", True),
        ("joann@x.io", False),
        ("jo.ann@x.io", False),
        ("ann@x.io.example", False),
        ("ann@x.iou", False),
        ("ann@x.io-mail.com", False),
        ("ann+tag@x.io", False),
    ],
)
def test_address_matcher_is_exact(text: str, hit: bool) -> None:
    matcher = AddressMatcher("Ann@x.io")
    assert matcher.in_text(text) is hit
    assert matcher.in_json(json.dumps({"data": {"email": text}})) is hit


def test_address_matcher_reads_json_escapes_and_keys() -> None:
    matcher = AddressMatcher("ann@x.io")
    assert matcher.in_json('{"email": "ann\\u0040x.io"}')
    assert matcher.in_json('{"ann@x.io": 1}')
    assert not matcher.in_json('{"email": "joann\\u0040x.io"}')
    assert matcher.in_json("[" * 5000 + '"ann@x.io"')  # not JSON (too deep): as text


@pytest.mark.parametrize("scan", [None, 2], ids=["one-page", "pages-of-2"])
async def test_erase_matches_addresses_exactly_everywhere(
    store: Store, scan: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if scan is not None:  # the plan reads leads, attempts and deliveries page by page
        monkeypatch.setattr(erasure, "_SCAN", scan)
    await store.ingest(
        [lead("ann", "ann@x.io"), lead("joann", "joann@x.io"), lead("other", "o@x.io")],
        ["crm"],
        [
            QuarantineIn("bad", json.dumps({"email": "ann@x.io"})),
            QuarantineIn("bad", json.dumps({"email": "joann@x.io"})),
            QuarantineIn("not json", "{oops ann@x.io"),
            QuarantineIn("not json", "{oops joann@x.io"),
            QuarantineIn("element 0: missing 'data'", '{"id": "ann"}', "ann", 0),
        ],
        T0,
    )
    # every delivery failed quoting joann, and "other"'s also quoting ann
    claims = await store.claim(destination="crm", limit=10, lease_seconds=60, now=T0)
    await store.finish(
        [
            Outcome(
                c.delivery_id,
                c.lease_token,
                "dead",
                "dead",
                T0,
                0.1,
                error="HTTP 409: ann@x.io exists"
                if c.lead_id == "other"
                else "HTTP 409: joann@x.io exists",
            )
            for c in claims
        ]
    )

    preview = await store.erase_preview(email="ANN@x.io")
    report = await store.erase(email="ANN@x.io")

    assert report == preview
    assert (report.leads, report.deliveries, report.quarantine) == (1, 1, 3)
    # ann's own attempt, and other's attempt quoting the address
    assert (report.attempts, report.errors_scrubbed, report.lead_ids) == (2, 1, ["ann"])
    assert await store.get_lead("ann") is None
    raws = sorted(q["raw"] for q in await store.list_quarantine())
    assert raws == ['{"email": "joann@x.io"}', "{oops joann@x.io"]
    (joann,) = await store.get_deliveries("joann")
    assert joann.last_error == "HTTP 409: joann@x.io exists"
    assert [a.error for a in await store.get_attempts("joann")] == ["HTTP 409: joann@x.io exists"]
    (other,) = await store.get_deliveries("other")
    assert other.last_error == ERASED_ERROR
    assert await store.get_attempts("other") == []
    assert await store.get_lead("joann") is not None


async def test_preview_changes_nothing(store: Store) -> None:
    await store.ingest([lead("a", "ann@x.io")], ["crm"], [], T0)
    preview = await store.erase_preview(email="ann@x.io")
    assert (preview.leads, preview.deliveries, preview.lead_ids) == (1, 1, ["a"])
    assert await store.get_lead("a") is not None
    assert len(await store.get_deliveries("a")) == 1


async def test_erase_runs_in_bounded_parts_with_progress(store: Store) -> None:
    leads = [lead(f"l{i:02}", "ann@x.io") for i in range(7)]
    quarantine = [QuarantineIn("bad", json.dumps({"e": "ann@x.io"})) for _ in range(3)]
    await store.ingest([*leads, lead("keep", "bob@x.io")], ["crm", "chat"], quarantine, T0)
    sizes: list[int] = []
    real_part = store.erase_part

    async def spy(part: Any, now: float) -> Any:
        sizes.append(max(len(part.lead_ids), len(part.quarantine_ids)))
        return await real_part(part, now)

    store.erase_part = spy  # type: ignore[method-assign]
    seen: list[tuple[int, int]] = []

    report = await store.erase(
        email="ann@x.io", chunk=3, progress=lambda done, total: seen.append((done, total))
    )

    assert sizes == [3, 3, 1]
    assert seen == [(6, 10), (9, 10), (10, 10)]
    assert (report.leads, report.deliveries, report.quarantine) == (7, 14, 3)
    assert report.lead_ids == [f"l{i:02}" for i in range(7)]
    assert (await store.status(T0)).leads == 1


# ---------------------------------------------------------------- tombstones


async def test_erased_lead_resent_is_a_duplicate_and_never_stored(store: Store) -> None:
    await store.ingest([lead("led_1", "ann@x.io")], ["crm"], [], T0)
    await store.erase(lead_id="led_1")

    again = await store.ingest(
        [lead("led_1", "ann@x.io"), lead("led_2", "bob@x.io")], ["crm"], [], T0 + 60
    )

    assert (again.accepted, again.duplicates) == (["led_2"], ["led_1"])
    assert await store.get_lead("led_1") is None
    assert await store.get_deliveries("led_1") == []
    claims = await store.claim(destination="crm", limit=10, lease_seconds=60, now=T0 + 60)
    assert [c.lead_id for c in claims] == ["led_2"]


async def test_erased_lead_resent_as_a_webhook_body_is_a_duplicate(store: Store) -> None:
    # the SQLite writer parses bodies itself: its own path to the same insert
    first = await body_ingester(store)(body(("led_1", "ann@x.io")), ["crm"], T0)
    assert first.accepted == ["led_1"]
    report = await store.erase(email="ann@x.io")
    assert report.lead_ids == ["led_1"]

    again = await body_ingester(store)(
        body(("led_1", "ann@x.io"), ("led_3", "c@x.io")), ["crm"], T0
    )

    assert (again.accepted, again.duplicates) == (["led_3"], ["led_1"])
    assert await store.get_lead("led_1") is None
    assert [d.lead_id for d in await store.list_deliveries()] == ["led_3"]


async def test_tombstones_do_not_touch_other_ids(store: Store) -> None:
    await store.ingest([lead("a", "ann@x.io")], ["crm"], [], T0)
    await store.erase(lead_id="a")
    result = await store.ingest([lead(f"n{i}", "x@x.io") for i in range(300)], ["crm"], [], T0)
    assert len(result.accepted) == 300 and result.duplicates == []


# ---------------------------------------------------------------- quarantine retention


def retention(**kw: Any) -> RetentionConfig:
    defaults: dict[str, Any] = {
        "quarantine_days": None,
        "quarantine_max_rows": None,
        "quarantine_max_bytes": None,
    }
    return RetentionConfig(**{**defaults, **kw})


async def quarantine_rows(store: Store, count: int, now: float, raw: str = "x") -> None:
    await store.ingest([], [], [QuarantineIn("bad", f"{raw}{i}") for i in range(count)], now)


def dropped(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "lead_bridge_quarantine_dropped_total", {"reason": reason}
    )
    return value or 0.0


async def test_quarantine_dropped_after_its_days_in_chunks(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await quarantine_rows(store, 5, T0, raw="old")
    await quarantine_rows(store, 2, T0 + 20 * DAY, raw="new")
    limits: list[int] = []
    real_drop = store.drop_quarantine

    async def spy(**kw: Any) -> int:
        limits.append(kw["limit"])
        return await real_drop(**kw)

    store.drop_quarantine = spy  # type: ignore[method-assign]
    metrics = Metrics()

    result = await trim_quarantine(
        store, retention(quarantine_days=10), now=T0 + 25 * DAY, metrics=metrics, chunk=2
    )

    assert result == {"age": 5, "cap": 0}
    assert limits == [2, 2, 2]  # 2 + 2 + 1: bounded transactions
    assert sorted(q["raw"] for q in await store.list_quarantine()) == ["new0", "new1"]
    assert dropped(metrics, "age") == 5 and dropped(metrics, "cap") == 0
    assert "event=quarantine_dropped by_age=5 by_cap=0 quarantine_days=10" in caplog.text


async def test_quarantine_row_cap_keeps_the_newest(store: Store) -> None:
    await quarantine_rows(store, 5, T0, raw="a")
    await quarantine_rows(store, 3, T0 + 1, raw="b")
    metrics = Metrics()

    result = await trim_quarantine(
        store, retention(quarantine_max_rows=4), now=T0 + 2, metrics=metrics, chunk=3
    )

    assert result == {"age": 0, "cap": 4}
    assert sorted(q["raw"] for q in await store.list_quarantine()) == ["a4", "b0", "b1", "b2"]
    assert dropped(metrics, "cap") == 4
    # within the cap: nothing more goes
    assert await trim_quarantine(store, retention(quarantine_max_rows=4), now=T0 + 3) == {
        "age": 0,
        "cap": 0,
    }


async def test_quarantine_byte_cap_counts_bytes_not_characters(store: Store) -> None:
    # 500 characters, 1,000 bytes in UTF-8 (plus the index digit)
    await quarantine_rows(store, 4, T0, raw="é" * 500)

    result = await trim_quarantine(store, retention(quarantine_max_bytes=2500), now=T0)

    assert result == {"age": 0, "cap": 2}
    assert sorted(q["raw"][-1] for q in await store.list_quarantine()) == ["2", "3"]


async def test_quarantine_without_limits_is_kept(store: Store) -> None:
    await quarantine_rows(store, 3, T0)
    assert await trim_quarantine(store, retention(), now=T0 + 1000 * DAY) == {"age": 0, "cap": 0}
    assert len(await store.list_quarantine()) == 3


async def test_erase_clears_the_search_index(store: Store) -> None:
    from bridge.operations.search import LeadQuery, search_leads

    await store.ingest([lead("a", "ann@x.io"), lead("b", "bob@x.io")], ["crm"], [], T0)
    found = await search_leads(store, LeadQuery(email="ANN@x.io"))
    assert [s.id for s in found.leads] == ["a"]

    await store.erase(email="ann@x.io")

    assert (await search_leads(store, LeadQuery(email="ann@x.io"))).leads == []
    assert [s.id for s in (await search_leads(store, LeadQuery(email="bob@x.io"))).leads] == ["b"]
