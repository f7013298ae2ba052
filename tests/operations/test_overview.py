"""Overview and schema drift on both backends."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bridge.destinations import Runtime
from bridge.metrics import Metrics
from bridge.operations.drift import drift_keys, flush_drift, refresh_gauge
from bridge.operations.overview import overview, unrouted_leads
from bridge.store.base import Outcome, Store
from tests.operations.helpers import T0, add_leads, finish_all, lead


class FakeEngine:
    def paused_until(self, destination: str) -> float | None:
        return T0 + 3600 if destination == "crm" else None

    def worker_running(self, destination: str) -> bool | None:
        return destination == "crm"


def runtime_with(make_runtime: Callable[..., Runtime], tmp_path: Path) -> Runtime:
    out = {"path": str(tmp_path / "o.jsonl")}
    return make_runtime(
        destinations=[
            {
                "name": "crm",
                "type": "jsonl",
                "settings": out,
                "mapping": {"email": "data.email", "name": "data.first_name"},
            },
            {
                "name": "chat",
                "type": "jsonl",
                "settings": out,
                "mapping": {"email": "data.email", "company": "data.organization_name"},
            },
        ]
    )


async def test_per_destination_health(
    store: Store, make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    runtime = runtime_with(make_runtime, tmp_path)
    now = T0 + 6 * 3600
    await add_leads(store, [lead(f"led_{i}") for i in range(6)], ["crm", "chat"], now=T0)
    await finish_all(store, "crm", only=["led_2"], now=now - 2 * 3600 - 30)  # 2 h ago
    await finish_all(
        store,
        "crm",
        status="dead",
        only=["led_3"],
        now=now - 60,
        error="HTTP 400: bad email jane@example.com",
        status_code=400,
    )
    await finish_all(store, "crm", only=["led_0", "led_1"], now=now - 30)  # this hour
    await finish_all(store, "crm", status="pending", only=["led_4"], now=now - 10, error="HTTP 503")
    claims = await store.claim(destination="chat", limit=10, lease_seconds=600, now=now)
    skipped = [c for c in claims if c.lead_id == "led_5"]
    await store.finish(
        [Outcome(c.delivery_id, c.lease_token, "skipped", "skipped", now, 0.0) for c in skipped]
    )
    view = await overview(store, runtime, FakeEngine(), now=now)
    crm = next(d for d in view.destinations if d.name == "crm")
    assert (crm.delivered, crm.pending, crm.retrying, crm.dead) == (3, 1, 1, 1)
    assert crm.per_hour[-1] == 2 and crm.per_hour[-3] == 1 and sum(crm.per_hour) == 3
    assert crm.last_error == "HTTP 503"  # the retry is newer than the dead letter
    assert crm.oldest_pending_age == 6 * 3600
    assert crm.paused_until is None  # the 429 pause ended before `now`
    assert crm.worker_running is True and crm.type == "jsonl" and crm.configured
    chat = next(d for d in view.destinations if d.name == "chat")
    assert chat.in_flight == 5 and chat.skipped == 1 and chat.worker_running is False
    assert view.leads == 6 and view.unrouted == 0


async def test_unrouted_leads(store: Store, tmp_path: Path) -> None:
    await add_leads(store, [lead("led_a"), lead("led_b")], ["crm"])
    claims = await store.claim(destination="crm", limit=10, lease_seconds=60, now=T0)
    await store.finish(
        [
            Outcome(c.delivery_id, c.lease_token, "skipped", "skipped", T0, 0.0)
            for c in claims
            if c.lead_id == "led_a"
        ]
    )
    assert [i for i, _ in await unrouted_leads(store)] == ["led_a"]


async def test_drift_flushed_and_judged_against_the_current_mappings(
    store: Store, make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    runtime = runtime_with(make_runtime, tmp_path)
    metrics = Metrics()
    # as the engine counts them: per delivery, the data keys its mapping did not read
    metrics.unmapped("crm", ["organization_name", "budget"])
    metrics.unmapped("chat", ["first_name", "budget"])
    metrics.unmapped("chat", ["budget"])
    assert await flush_drift(store, metrics) == 4
    assert metrics.drift == {}
    metrics.unmapped("crm", ["budget"])
    await flush_drift(store, metrics)
    (key,) = await drift_keys(store, runtime)  # first_name and organization_name are read
    assert (key.key, key.count, key.destinations) == ("budget", 4, ["chat", "crm"])
    assert key.first_seen <= key.last_seen
    assert await refresh_gauge(store, runtime, metrics) == 1
    assert b"lead_bridge_unmapped_provider_keys 1.0" in metrics.render()[0]


async def test_undelivered_counted_only_when_some_lead_lacks_every_delivery(
    store: Store, make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    runtime = runtime_with(make_runtime, tmp_path)
    await add_leads(store, [lead("led_1"), lead("led_2")], ["crm"])
    assert (await overview(store, runtime, now=T0)).undelivered == 0
    await add_leads(store, [lead("led_3")], [])  # stored while no destination was set
    view = await overview(store, runtime, now=T0)
    assert (view.leads, view.undelivered) == (3, 1)
    assert [d.name for d in view.destinations] == ["chat", "crm"]


async def test_engine_state_read_from_the_engine(
    store: Store, make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    import time

    from bridge.engine import Engine
    from bridge.operations.overview import LocalEngineView

    runtime = runtime_with(make_runtime, tmp_path)
    metrics = Metrics()
    engine = Engine(store, runtime.active, metrics, runtime.config.worker)
    crm = next(w for w in engine.workers if w.name == "crm")
    now = time.time()
    crm.throttle.paused_until = now + 600
    crm.throttle.pause_reason = "rate limited (HTTP 429)"
    view = await overview(store, runtime, LocalEngineView(engine, metrics), now=now)
    by_name = {d.name: d for d in view.destinations}
    assert by_name["crm"].paused_until == now + 600
    assert by_name["crm"].pause_reason == "rate limited (HTTP 429)"
    assert by_name["chat"].paused_until is None and by_name["chat"].pause_reason is None
    assert by_name["crm"].worker_running is False  # the engine was not started
