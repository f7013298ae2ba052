"""Retention: payloads of finished leads (the id keeps catching duplicates), quarantine."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from bridge.config import RetentionConfig
from bridge.config_load import validate_config
from bridge.destinations import Runtime
from bridge.errors import ConfigError, StoreUnavailable
from bridge.retention import DAY, purge_once, retention_task
from bridge.store.base import LeadIn, Outcome, QuarantineIn, Store
from bridge.store.sqlite import SQLiteStore
from tests.waiting import eventually

T0 = 1_700_000_000.0


def lead(lead_id: str) -> LeadIn:
    body = {"id": lead_id, "data": {"email": f"{lead_id}@example.com"}}
    return LeadIn(id=lead_id, payload=json.dumps(body))


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


async def test_task_with_nothing_to_do_returns_at_once() -> None:
    nothing = RetentionConfig(
        quarantine_days=None, quarantine_max_rows=None, quarantine_max_bytes=None
    )
    # Far below the hour-long interval it would otherwise sleep, far above what a
    # busy machine may take to return.
    await asyncio.wait_for(retention_task(Store(), nothing), timeout=60)


def test_quarantine_is_bounded_by_default() -> None:
    cfg = RetentionConfig()
    assert cfg.enabled
    assert (cfg.quarantine_days, cfg.quarantine_max_rows, cfg.quarantine_max_bytes) == (
        30,
        10_000,
        100_000_000,
    )


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (4096, 4096),
        ("100MB", 100_000_000),
        ("64MiB", 64 * 2**20),
        ("512 kb", 512_000),
        (None, None),
    ],
)
def test_quarantine_byte_cap_sizes(value: object, size: int | None) -> None:
    config = validate_config({"retention": {"quarantine_max_bytes": value}})
    assert config.retention.quarantine_max_bytes == size


@pytest.mark.parametrize(
    ("retention", "path", "fragment"),
    [
        ({"quarantine_max_bytes": "lots"}, "retention.quarantine_max_bytes", "expected a size"),
        ({"quarantine_max_bytes": 0}, "retention.quarantine_max_bytes", "greater than or equal"),
        ({"quarantine_max_bytes": True}, "retention.quarantine_max_bytes", "expected a size"),
        ({"quarantine_max_rows": 0}, "retention.quarantine_max_rows", "greater than or equal"),
        ({"quarantine_days": "soon"}, "retention.quarantine_days", "integer"),
        ({"interval": 0}, "retention.interval", "greater than 0"),
    ],
)
def test_bad_quarantine_limits_name_their_key(
    retention: dict[str, object], path: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_config({"retention": retention})
    assert any(p == path and fragment in m for p, m in caught.value.problems), caught.value.problems


async def test_the_service_trims_the_quarantine_with_a_metric(
    make_runtime: Callable[..., Runtime], store: SQLiteStore
) -> None:
    from bridge.app import create_app

    await store.ingest([], [], [QuarantineIn("bad", f"body {i}") for i in range(3)], now=T0)
    runtime = make_runtime(retention={"quarantine_max_rows": 1, "quarantine_days": None})
    app = create_app(runtime, store=store, start_workers=False)
    metrics = app.state.lb.metrics

    async with app.app.router.lifespan_context(app.app):

        async def trimmed() -> bool:
            return len(await store.list_quarantine()) <= 1

        await eventually(trimmed, "retention to trim the quarantine")

    assert [q["raw"] for q in await store.list_quarantine()] == ["body 2"]
    sample = metrics.registry.get_sample_value(
        "lead_bridge_quarantine_dropped_total", {"reason": "cap"}
    )
    assert sample == 2
