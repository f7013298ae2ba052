"""The built-in notifier against a real SQLite store and a local fake receiver:
one summary per check, per-destination rate limit, stalled destinations, no lead data."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from aiohttp import web

from bridge.app import create_app
from bridge.config import AlertsConfig
from bridge.destinations import Runtime
from bridge.errors import ConfigError
from bridge.notify import Notifier, NotifyError
from bridge.store.base import LeadIn, Outcome
from bridge.store.sqlite import SQLiteStore
from tests.conftest import make_lead, spy_calls
from tests.fakes import Script

T0 = 1_800_000_000.0
EMAIL = "jane.canary@example.com"


class Receiver:
    """A local HTTP endpoint standing in for Slack or a webhook: records each POST."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.statuses: list[int] = []  # answers to give, in order; then 200
        self.arrived = asyncio.Event()
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            raw = await request.read()
            status = self.statuses.pop(0) if self.statuses else 200
            if status == 200:
                self.raw.append(raw)
                self.bodies.append(json.loads(raw))
                self.arrived.set()
            return web.Response(status=status, text="ok")

        app = web.Application()
        app.router.add_post("/hook", handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.close()


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def notifier(store: SQLiteStore, receiver: Receiver, clock: Clock, **cfg: Any) -> Notifier:
    config = AlertsConfig.model_validate({"url": receiver.url, "allow_private": True, **cfg})
    return Notifier(store, config, clock=clock, host="bridge-1")


async def add(store: SQLiteStore, *ids: str, dests: tuple[str, ...] = ("crm",)) -> None:
    leads = [LeadIn(i, json.dumps(make_lead(i, email=EMAIL))) for i in ids]
    await store.ingest(leads, list(dests), [], T0)


async def finish(
    store: SQLiteStore,
    lead_id: str,
    status: str,
    at: float,
    *,
    dest: str = "crm",
    error: str | None = None,
    code: int | None = None,
) -> None:
    claims = await store.claim(destination=dest, limit=100, lease_seconds=30, now=at)
    (claim,) = [c for c in claims if c.lead_id == lead_id]
    await store.release([(c.delivery_id, c.lease_token) for c in claims if c is not claim], at)
    outcome = Outcome(
        claim.delivery_id,
        claim.lease_token,
        status,  # type: ignore[arg-type]
        status,  # type: ignore[arg-type]
        started_at=at,
        duration=0.1,
        error=error,
        status_code=code,
    )
    assert await store.finish([outcome]) == [True]


async def test_dead_letters_make_one_summary_without_lead_data(
    store: SQLiteStore, receiver: Receiver
) -> None:
    clock = Clock()
    n = notifier(store, receiver, clock)
    await add(store, "led_a", "led_b", "led_c", dests=("crm", "hook"))
    await n.check()  # the first look: nothing has happened yet
    clock.now = T0 + 60
    await finish(store, "led_a", "dead", T0 + 30, error=f"HTTP 422: invalid {EMAIL}", code=422)
    await finish(
        store, "led_b", "dead", T0 + 31, error="check the credentials of destination crm: 401"
    )
    await finish(store, "led_a", "dead", T0 + 32, dest="hook", error="mapping error: x")
    await finish(store, "led_c", "delivered", T0 + 33)

    sent = await n.check()

    assert [t.destination for t in sent] == ["crm", "hook"]
    assert len(receiver.bodies) == 1  # one message for everything in this check
    text = receiver.bodies[0]["text"]
    assert text == (
        "Lead Bridge on bridge-1 needs attention:\n"
        "• crm: 2 new dead letter(s) (HTTP 422: 1, credentials refused: 1)\n"
        "• hook: 1 new dead letter(s) (mapping error: 1); 2 pending, oldest 60 s"
    )
    raw = receiver.raw[0].decode()
    for secret in ("led_a", "led_b", "led_c", EMAIL, "invalid", "John"):
        assert secret not in raw


async def test_at_most_one_notice_per_destination_per_min_interval(
    store: SQLiteStore, receiver: Receiver
) -> None:
    clock = Clock()
    n = notifier(store, receiver, clock, min_interval="15m")
    await add(store, "led_1", "led_2", "led_3", "led_4")
    await n.check()
    await finish(store, "led_1", "dead", T0 + 10, code=422, error="HTTP 422")
    clock.now = T0 + 60
    assert len(await n.check()) == 1

    await finish(store, "led_2", "dead", T0 + 100, code=422, error="HTTP 422")
    await finish(store, "led_3", "dead", T0 + 200, code=503, error="gave up after 9 attempt(s)")
    clock.now = T0 + 300
    assert await n.check() == []  # within 15 min of the last notice
    clock.now = T0 + 60 + 900
    (trouble,) = await n.check()  # what happened meanwhile, in one notice

    assert trouble.new_dead_letters == 2
    assert trouble.reasons == {"HTTP 422": 1, "retries exhausted (retry.max_age)": 1}
    assert len(receiver.bodies) == 2


async def test_a_destination_that_stops_making_progress_is_reported_once_per_interval(
    store: SQLiteStore, receiver: Receiver
) -> None:
    clock = Clock()
    n = notifier(store, receiver, clock, stalled_after="15m", min_interval="15m")
    await add(store, "led_1", "led_2", "led_3")
    await n.check()
    clock.now = T0 + 600
    assert await n.check() == []  # pending, but only for 10 min
    clock.now = T0 + 901
    (trouble,) = await n.check()
    assert (trouble.stalled_seconds, trouble.pending, trouble.new_dead_letters) == (901, 3, 0)
    assert receiver.bodies[0]["text"].endswith(
        "• crm: no delivery finished for 15 min; 3 pending, oldest 15 min"
    )

    await finish(store, "led_1", "delivered", T0 + 1000)  # it moves again
    clock.now = T0 + 1900
    assert await n.check() == []
    clock.now = T0 + 1900 + 901  # and stops again
    assert [t.stalled_seconds for t in await n.check()] == [901]
    assert len(receiver.bodies) == 2


async def test_a_failed_post_is_logged_and_sent_at_the_next_check(
    store: SQLiteStore, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    n = notifier(store, receiver, clock)
    await add(store, "led_1")
    await n.check()
    await finish(store, "led_1", "dead", T0 + 5, code=400, error="HTTP 400")
    receiver.statuses = [500]
    clock.now = T0 + 60

    assert await n.check() == []
    assert 'event=alert_failed error="HTTP 500"' in caplog.text
    clock.now = T0 + 120
    (trouble,) = await n.check()
    assert trouble.new_dead_letters == 1 and len(receiver.bodies) == 1


async def test_webhook_format_carries_the_figures(store: SQLiteStore, receiver: Receiver) -> None:
    clock = Clock()
    n = notifier(store, receiver, clock, format="webhook")
    await add(store, "led_1", "led_2")
    await n.check()
    await finish(store, "led_1", "dead", T0 + 5, code=422, error="HTTP 422")
    clock.now = T0 + 60
    await n.check()

    (body,) = receiver.bodies
    assert body["source"] == "lead-bridge" and body["host"] == "bridge-1"
    assert body["destinations"] == [
        {
            "destination": "crm",
            "new_dead_letters": 1,
            "reasons": {"HTTP 422": 1},
            "pending": 1,
            "oldest_pending_seconds": 60.0,
            "stalled_seconds": None,
            "worker_down": False,
        }
    ]


async def test_the_service_runs_the_notifier_when_alerts_url_is_set(
    make_runtime: Callable[..., Runtime], receiver: Receiver, scripts: dict[str, Script]
) -> None:
    from bridge.errors import PermanentError

    scripts["alerts"] = Script([PermanentError("HTTP 422: Unprocessable", status_code=422)])
    runtime = make_runtime(
        auth={"header_secrets": ["hook-secret-123"]},
        worker={"poll_interval": 0.02},
        alerts={"url": receiver.url, "check_interval": "50ms", "allow_private": True},
        destinations=[
            {
                "name": "crm",
                "type": "tests.fakes:ScriptedConnector",
                "settings": {"script": "alerts"},
            }
        ],
    )
    store = SQLiteStore(runtime.config.storage.url, synchronous="NORMAL")
    await store.open()
    app = create_app(runtime, store=store)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://t") as c,
        ):
            lead = make_lead("led_wired", email=EMAIL)
            response = await c.post(
                "/lead/webhook", json=[lead], headers={"authorization": "hook-secret-123"}
            )
            assert response.status_code == 200
            await asyncio.wait_for(receiver.arrived.wait(), timeout=30)
    finally:
        await store.close()

    assert "• crm: 1 new dead letter(s) (HTTP 422: 1)" in receiver.bodies[0]["text"]


@pytest.mark.parametrize(
    ("alerts", "message"),
    [
        ({"url": "ftp://example.com/x"}, "alerts.url: expected an http:// or https:// URL"),
        ({"url": "https://h/x", "check_interval": 0}, "alerts.check_interval: expected a duration"),
        ({"url": "https://h/x", "format": "teams"}, "alerts.format"),
        ({"url": "https://h/x", "dead_letters": 0}, "alerts.dead_letters"),
    ],
)
def test_bad_alerts_config_names_the_key(
    make_runtime: Callable[..., Runtime], alerts: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        make_runtime(alerts=alerts)
    assert message in str(info.value)


async def test_a_delivery_loop_that_is_not_running_is_reported_at_once(
    store: SQLiteStore, receiver: Receiver
) -> None:
    from bridge.metrics import Metrics

    clock = Clock()
    metrics = Metrics()
    config = AlertsConfig.model_validate({"url": receiver.url, "allow_private": True})
    n = Notifier(store, config, clock=clock, host="bridge-1", metrics=metrics)
    metrics.worker_running("crm", True)
    await add(store, "led_1")
    await n.check()
    metrics.worker_running("crm", False)  # what the engine's supervision reports
    metrics.worker_running("hook", False)  # no delivery rows at all yet
    clock.now = T0 + 60

    sent = await n.check()

    assert [(t.destination, t.worker_down) for t in sent] == [("crm", True), ("hook", True)]
    assert receiver.bodies[0]["text"].splitlines()[1:] == [
        "• crm: delivery loop not running; 1 pending, oldest 60 s",
        "• hook: delivery loop not running",
    ]
    clock.now = T0 + 120
    assert await n.check() == []  # rate limited like every other notice


async def test_a_private_alerts_url_is_refused_without_a_connection(
    store: SQLiteStore, receiver: Receiver
) -> None:
    config = AlertsConfig.model_validate({"url": receiver.url})  # 127.0.0.1, no opt-out
    n = Notifier(store, config, clock=Clock(), host="bridge-1")
    with pytest.raises(NotifyError, match=r"non-public address 127\.0\.0\.1"):
        await n.post(b"{}")
    assert receiver.bodies == []


async def test_checks_read_the_cheap_counts_not_the_whole_history(
    store: SQLiteStore, receiver: Receiver
) -> None:
    """Like metrics scrapes (tests/test_metrics.py): every check reads
    queue_depths(); delivered and skipped are counted at most every
    finished_interval and before a stall is reported; never the full status()."""
    calls = spy_calls(store, "status", "queue_depths", "finished_counts")
    clock = Clock()
    config = AlertsConfig.model_validate(
        {"url": receiver.url, "allow_private": True, "stalled_after": "15m"}
    )
    n = Notifier(store, config, clock=clock, host="bridge-1", finished_interval=300)
    await add(store, "led_1", "led_2", "led_3")
    for minute in range(10):  # progress each minute: no stall to check
        clock.now = T0 + 60 * minute
        if minute:
            await finish(store, f"led_{minute}", "delivered", clock.now)
            await add(store, f"led_{minute + 3}")  # the backlog stays at 3
        assert await n.check() == []
    assert calls.count("queue_depths") == 10
    assert calls.count("finished_counts") == 2  # at 0 and 5 min
    assert "status" not in calls

    # Nothing finishes from minute 9 on. The progress seen last in the cheap counts
    # is confirmed by a count up to finished_interval later; then the stall is
    # reported on a fresh count.
    sent: list[Any] = []
    minute = 9
    while not sent and minute < 60:
        minute += 1
        clock.now = T0 + 60 * minute
        sent = await n.check()
    (trouble,) = sent
    assert trouble.pending == 3 and trouble.stalled_seconds is not None
    assert 540 + 900 <= clock.now - T0 <= 540 + 900 + 300 + 60
    assert calls.count("queue_depths") == minute + 1
    assert calls.count("finished_counts") <= 2 + (minute - 9) // 5 + 1
    assert "status" not in calls
