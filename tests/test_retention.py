"""Retention purges payloads of finished leads only; the id keeps catching duplicates."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.config import RetentionConfig
from bridge.errors import StoreUnavailable
from bridge.retention import DAY, purge_once, retention_task
from bridge.store.base import LeadIn, Outcome, Store
from bridge.store.sqlite import SQLiteStore

T0 = 1_700_000_000.0


def lead(lead_id: str) -> LeadIn:
    body = {"id": lead_id, "data": {"email": f"{lead_id}@example.com"}}
    return LeadIn(id=lead_id, payload=json.dumps(body))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(f"sqlite:///{tmp_path / 'lb.db'}", synchronous="NORMAL")
    await s.open()
    yield s
    await s.close()


async def deliver_all(store: Store, destination: str, now: float) -> None:
    claims = await store.claim(destination=destination, limit=100, lease_seconds=60, now=now)
    await store.finish(
        [Outcome(c.delivery_id, c.lease_token, "delivered", "delivered", now, 0.01) for c in claims]
    )


async def test_purges_only_old_fully_delivered_leads(store: SQLiteStore) -> None:
    await store.ingest([lead("old_done")], ["crm"], [], now=T0)
    # delivered to crm but still waiting for slack: not finished, so kept
    await store.ingest([lead("old_pending")], ["crm", "slack"], [], now=T0)
    await deliver_all(store, "crm", T0)
    await store.ingest([lead("new_done")], ["crm"], [], now=T0 + 9 * DAY)
    await deliver_all(store, "crm", T0 + 9 * DAY)

    purged = await purge_once(store, 7, now=T0 + 10 * DAY)

    assert purged == 1
    old = await store.get_lead("old_done")
    assert old is not None and old.payload is None
    pending = await store.get_lead("old_pending")
    assert pending is not None and pending.payload is not None
    recent = await store.get_lead("new_done")
    assert recent is not None and recent.payload is not None


async def test_purged_lead_id_still_detects_provider_retries(store: SQLiteStore) -> None:
    await store.ingest([lead("led_1")], ["crm"], [], now=T0)
    await deliver_all(store, "crm", T0)
    assert await purge_once(store, 1, now=T0 + 2 * DAY) == 1

    again = await store.ingest([lead("led_1")], ["crm"], [], now=T0 + 2 * DAY)

    assert again.duplicates == ["led_1"] and again.accepted == []
    deliveries = await store.get_deliveries("led_1")
    assert [d.status for d in deliveries] == ["delivered"]


async def test_task_purges_every_interval_until_cancelled(store: SQLiteStore) -> None:
    await store.ingest([lead("a")], ["crm"], [], now=T0)
    await deliver_all(store, "crm", T0)
    clock_values = iter([T0 + 0.5 * DAY, T0 + 3 * DAY, T0 + 4 * DAY])
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise asyncio.CancelledError

    cfg = RetentionConfig(payload_days=2, interval="1h")
    with pytest.raises(asyncio.CancelledError):
        await retention_task(store, cfg, clock=lambda: next(clock_values), sleep=fake_sleep)

    assert sleeps == [3600.0, 3600.0, 3600.0]
    record = await store.get_lead("a")
    assert record is not None and record.payload is None


async def test_task_survives_store_failures(caplog: pytest.LogCaptureFixture) -> None:
    class Down(Store):
        calls = 0

        async def purge_payloads(self, before: float) -> int:
            self.calls += 1
            raise StoreUnavailable("database is down")

    down = Down()
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await retention_task(down, RetentionConfig(payload_days=1, interval=60), sleep=fake_sleep)

    assert down.calls == 2
    assert "event=retention_failed error=StoreUnavailable" in caplog.text


async def test_task_without_payload_days_returns_at_once() -> None:
    await asyncio.wait_for(retention_task(Store(), RetentionConfig()), timeout=1)
