"""/metrics: the separate plain-HTTP port, queue gauges at scrape time, and a sample
after a real flow (intake -> store -> engine -> connector) with no lead data in it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from bridge.app import create_app
from bridge.destinations import Runtime
from bridge.errors import ConfigError, StoreUnavailable
from bridge.metrics import Metrics
from bridge.metrics_server import QueueGauges, scrape, serve_metrics, start_metrics_server
from bridge.store.base import LeadIn, Outcome, Store, StoreStatus
from bridge.store.sqlite import SQLiteStore
from tests.conftest import make_lead, spy_calls
from tests.waiting import DEADLINE, eventually

TOKEN = "metrics-admin-token-0123"


async def test_separate_port_serves_metrics_with_fresh_queue_gauges(store: SQLiteStore) -> None:
    metrics = Metrics()
    await store.ingest([LeadIn("led_1", "{}"), LeadIn("led_2", "{}")], ["crm"], [], now=100.0)
    server = await start_metrics_server(metrics, "127.0.0.1", 0, store=store)
    try:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{server.port}/metrics")
            other = await client.get(f"http://127.0.0.1:{server.port}/status")
    finally:
        await server.close()

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'lead_bridge_queue_depth{destination="crm",status="pending"} 2.0' in response.text
    assert "lead_bridge_oldest_pending_age_seconds" in response.text
    assert other.status_code == 404


async def test_serve_metrics_runs_until_cancelled() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    task = asyncio.create_task(serve_metrics(Metrics(), "127.0.0.1", port))
    async with httpx.AsyncClient() as client:
        deadline = time.monotonic() + DEADLINE
        while True:
            with contextlib.suppress(httpx.ConnectError):
                response = await client.get(f"http://127.0.0.1:{port}/metrics")
                break
            assert time.monotonic() < deadline, "the metrics server did not start"
            await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert "lead_bridge_leads_total" in response.text
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{port}/metrics")


async def test_port_in_use_is_a_config_error() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"metrics.port: cannot listen on 127.0.0.1:{port}"):
            await start_metrics_server(Metrics(), "127.0.0.1", port)


async def test_scrape_survives_a_store_outage(caplog: pytest.LogCaptureFixture) -> None:
    class Down(Store):
        async def status(self, now: float) -> StoreStatus:
            raise StoreUnavailable("down")

    metrics = Metrics()
    body, _ = await scrape(metrics, QueueGauges(metrics, Down()), now=1.0)

    assert b"lead_bridge_webhook_requests_total" in body
    assert "event=metrics_queue_stale error=StoreUnavailable" in caplog.text


async def test_scrapes_count_the_history_only_now_and_then(store: SQLiteStore) -> None:
    """A scrape reads pending and dead deliveries (cheap, through indexes) every
    time; delivered and skipped ones, a count over the whole history, at most
    every finished_counts_interval; never the full status()."""
    calls = spy_calls(store, "status", "queue_depths", "finished_counts")
    await store.ingest([LeadIn("led_1", "{}"), LeadIn("led_2", "{}")], ["crm"], [], now=100.0)
    (claim, _) = await store.claim(destination="crm", limit=2, lease_seconds=30, now=100.0)
    await store.finish(
        [Outcome(claim.delivery_id, claim.lease_token, "delivered", "delivered", 101.0, 0.1)]
    )
    metrics = Metrics()
    queue = QueueGauges(metrics, store, finished_interval=3600)
    for _ in range(5):
        body, _ = await scrape(metrics, queue, now=200.0)
    text = body.decode()
    assert 'lead_bridge_queue_depth{destination="crm",status="pending"} 1.0' in text
    assert 'lead_bridge_queue_depth{destination="crm",status="delivered"} 1.0' in text
    assert 'lead_bridge_dead_letters{destination="crm"} 0.0' in text
    assert calls.count("queue_depths") == 5
    assert calls.count("finished_counts") == 1
    assert "status" not in calls


async def test_the_per_scrape_queries_use_indexes_not_a_table_scan(store: SQLiteStore) -> None:
    from bridge.store.sqlite import DEAD_BY_DESTINATION, PENDING_BY_DESTINATION

    for sql, params in ((PENDING_BY_DESTINATION, (0.0,)), (DEAD_BY_DESTINATION, ())):
        plan = await store._read(
            lambda c, q=sql, p=params: [r[3] for r in c.execute(f"EXPLAIN QUERY PLAN {q}", p)]
        )
        assert any("USING" in step and "INDEX" in step for step in plan), plan
        assert not any(step == "SCAN deliveries" for step in plan), plan


async def test_sample_after_a_real_flow(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    runtime = make_runtime(
        admin={"tokens": [TOKEN]},
        auth={"header_secrets": ["hook-secret-123"]},
        worker={"poll_interval": 0.05},
        destinations=[
            {
                "name": "archive",
                "type": "jsonl",
                "settings": {"path": str(tmp_path / "out.jsonl"), "fsync": False},
                # only the email is mapped: every other data key is schema drift
                "mapping": {"email": {"source": "data.email"}},
            }
        ],
    )
    store = SQLiteStore(runtime.config.storage.url, synchronous="NORMAL")
    await store.open()
    app = create_app(runtime, store=store)
    transport = httpx.ASGITransport(app=app)
    hook = {"authorization": "hook-secret-123"}
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="https://t") as client,
        ):
            lead = make_lead("led_metrics_1", email="metrics.person@example.com")
            assert (
                await client.post("/lead/webhook", json=[lead], headers=hook)
            ).status_code == 200
            assert (
                await client.post("/lead/webhook", json=[lead], headers=hook)
            ).status_code == 200
            assert (await client.post("/lead/webhook", json=[], headers=hook)).status_code == 200
            bad = await client.post("/lead/webhook", json=[{"id": "led_x"}], headers={})
            assert bad.status_code == 401

            async def delivered() -> bool:
                (delivery,) = await store.get_deliveries("led_metrics_1")
                return delivery.status == "delivered"

            await eventually(delivered, "the delivery")
            response = await client.get(
                "/admin/metrics", headers={"authorization": f"Bearer {TOKEN}"}
            )
    finally:
        await store.close()

    text = response.text
    for line in (
        'lead_bridge_leads_total{result="received"} 2.0',
        'lead_bridge_leads_total{result="accepted"} 1.0',
        'lead_bridge_leads_total{result="duplicate"} 1.0',
        "lead_bridge_probes_total 1.0",
        'lead_bridge_webhook_requests_total{outcome="unauthorized"} 1.0',
        'lead_bridge_deliveries_total{destination="archive",outcome="delivered"} 1.0',
        'lead_bridge_attempt_duration_seconds_count{destination="archive"} 1.0',
        'lead_bridge_queue_depth{destination="archive",status="delivered"} 1.0',
        'lead_bridge_dead_letters{destination="archive"} 0.0',
        'lead_bridge_unmapped_keys_total{destination="archive",key="first_name"} 1.0',
    ):
        assert line in text, line
    # No lead data in label values: only key names, destination names and outcomes.
    assert "led_metrics_1" not in text and "example.com" not in text and "John" not in text
    print(text)  # the sample quoted in docs/operations.md: `pytest -s -k sample`


def test_pause_gauge_counts_down_on_the_scrape_clock() -> None:
    now = [1000.0]
    metrics = Metrics(clock=lambda: now[0])
    metrics.paused("crm", 0.0)
    metrics.paused("hubspot", 1600.0)

    body = metrics.render()[0].decode()
    assert 'lead_bridge_destination_paused_seconds{destination="crm"} 0.0' in body
    assert 'lead_bridge_destination_paused_seconds{destination="hubspot"} 600.0' in body
    now[0] = 2000.0  # the pause is over: 0, never negative
    body = metrics.render()[0].decode()
    assert 'lead_bridge_destination_paused_seconds{destination="hubspot"} 0.0' in body


def test_worker_and_schema_drift_gauges() -> None:
    metrics = Metrics()
    metrics.worker_running("crm", True)
    metrics.worker_running("hook", False)
    metrics.worker_restarted("hook")
    metrics.unmapped_provider_keys.set(3)

    body = metrics.render()[0].decode()
    assert 'lead_bridge_worker_up{destination="crm"} 1.0' in body
    assert 'lead_bridge_worker_up{destination="hook"} 0.0' in body
    assert 'lead_bridge_worker_restarts_total{destination="hook"} 1.0' in body
    assert "lead_bridge_unmapped_provider_keys 3.0" in body
