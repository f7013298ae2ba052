"""The delivery engine with a scripted connector and an injectable clock (no real backoff sleeps)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bridge.destinations import Runtime
from bridge.engine import Engine, Finisher, idempotency_key
from bridge.errors import AuthError, PermanentError, RateLimited, RetryableError, StoreUnavailable
from bridge.metrics import Metrics
from bridge.store.base import DeliveryRecord, LeadIn, Outcome
from bridge.store.sqlite import SQLiteStore
from tests.conftest import make_lead
from tests.fakes import SCRIPTS, FakeClock, Script
from tests.waiting import DEADLINE, eventually

SCHEDULE = [5, 300, 1800, 7200]


def dest(name: str, script: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": extra.pop("type", "tests.fakes:ScriptedConnector"),
        "settings": {"script": script or name},
        "retry": {
            "schedule": SCHEDULE,
            "jitter": 0,
            "connect_retries": 1,
            **extra.pop("retry", {}),
        },
        **extra,
    }


class Harness:
    def __init__(self, runtime: Runtime, store: SQLiteStore, clock: FakeClock) -> None:
        self.runtime = runtime
        self.store = store
        self.clock = clock
        self.metrics = Metrics()
        self.engines: list[Engine] = []

    def engine(self) -> Engine:
        engine = Engine(
            self.store,
            self.runtime.active,
            self.metrics,
            self.runtime.config.worker,
            clock=self.clock.time,
            monotonic=self.clock.time,
            sleep=self.clock.sleep,
            rng=lambda: 0.5,
            restart_backoff=0.01,
        )
        self.engines.append(engine)
        return engine

    async def add(self, *lead_ids: str, **data: Any) -> None:
        leads = [LeadIn(i, json.dumps(make_lead(i, **data))) for i in lead_ids]
        names = [d.name for d in self.runtime.active]
        await self.store.ingest(leads, names, [], self.clock.time())
        for engine in self.engines:
            engine.wake()

    async def delivery(self, lead_id: str, destination: str) -> DeliveryRecord:
        [row] = [
            d for d in await self.store.get_deliveries(lead_id) if d.destination == destination
        ]
        return row

    async def settle(
        self,
        lead_id: str,
        destination: str,
        statuses: tuple[str, ...] = ("delivered", "dead", "skipped"),
    ) -> DeliveryRecord:
        """Advance the fake clock to each retry until the delivery is final."""
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            row = await self.delivery(lead_id, destination)
            if row.status in statuses:
                return row
            if row.status == "pending" and not row.leased and row.next_attempt_at is not None:
                if row.next_attempt_at > self.clock.time():
                    self.clock.now = row.next_attempt_at
                for engine in self.engines:
                    engine.wake()
            await asyncio.sleep(0.005)
        raise AssertionError(f"delivery did not settle: {row}")


@pytest.fixture
async def make_harness(
    make_runtime: Callable[..., Runtime],
) -> AsyncIterator[Callable[..., Any]]:
    harnesses: list[Harness] = []

    async def make(*destinations: dict[str, Any], worker: dict[str, Any] | None = None) -> Harness:
        runtime = make_runtime(
            destinations=list(destinations),
            worker={"poll_interval": "10ms", "lease": "60s", **(worker or {})},
        )
        store = SQLiteStore(runtime.config.storage.url)
        await store.open()
        clock = FakeClock()
        for d in destinations:
            if "script" in d["settings"]:
                SCRIPTS.setdefault(d["settings"]["script"], Script()).clock = clock
        harness = Harness(runtime, store, clock)
        harnesses.append(harness)
        return harness

    yield make
    for h in harnesses:
        for engine in h.engines:
            if not engine.stopping:
                await engine.stop(2)
        await h.store.close()
    SCRIPTS.clear()


def script(name: str, *actions: Any) -> Script:
    SCRIPTS[name] = Script(list(actions))
    return SCRIPTS[name]


# --------------------------------------------------------------------------- outcomes


async def test_flaky_destination_is_delivered_once_at_growing_delays(
    make_harness: Callable[..., Any],
) -> None:
    s = script("crm", *[RetryableError("HTTP 503", status_code=503)] * 3)
    h: Harness = await make_harness(dest("crm"))
    await h.engine().start()
    start = h.clock.time()
    await h.add("led_1")
    row = await h.settle("led_1", "crm")
    assert row.status == "delivered"
    assert row.remote_id == "rec-led_1"
    assert row.attempts == 4
    assert [c.attempt for c in s.calls] == [1, 2, 3, 4]
    assert [round(c.at - start) for c in s.calls] == [0, 5, 305, 2105]
    attempts = await h.store.get_attempts("led_1")
    assert [a.outcome for a in attempts] == ["retry", "retry", "retry", "delivered"]
    assert [a.error for a in attempts][:3] == ["HTTP 503"] * 3
    assert h.metrics.deliveries_total.labels("crm", "retry")._value.get() == 3  # type: ignore[attr-defined]
    # Delivered is final: nothing more is sent however long we wait.
    h.clock.advance(86400)
    await asyncio.sleep(0.05)
    assert len(s.calls) == 4


async def test_connection_error_is_retried_inside_the_attempt(
    make_harness: Callable[..., Any],
) -> None:
    s = script("crm", RetryableError("connection refused"))
    h: Harness = await make_harness(dest("crm"))
    await h.engine().start()
    await h.add("led_1")
    row = await h.settle("led_1", "crm")
    assert (row.status, row.attempts) == ("delivered", 1)
    assert len(s.calls) == 2  # tenacity's quick retry, same attempt


async def test_connection_retries_wait_growing_pauses_within_the_attempt(
    make_harness: Callable[..., Any],
) -> None:
    s = script("crm", *[RetryableError("connection refused")] * 3)
    h: Harness = await make_harness(
        dest("crm", retry={"connect_retries": 2, "connect_retry_wait": 0.5})
    )
    s.clock = h.clock
    await h.engine().start()
    await h.add("led_1")
    for _ in range(400):
        row = await h.delivery("led_1", "crm")
        if row.attempts:
            break
        await asyncio.sleep(0.005)
    assert (
        row.status == "pending"
        and row.attempts == 1
        and "connection refused" in (row.last_error or "")
    )
    assert [c.attempt for c in s.calls[:3]] == [1, 1, 1]
    gaps = [b.at - a.at for a, b in zip(s.calls, s.calls[1:3], strict=False)]
    assert gaps == [0.5, 1.0]  # connect_retry_wait, then doubled


async def test_concurrency_bounds_requests_in_flight(make_harness: Callable[..., Any]) -> None:
    s = script("crm", *["block"] * 6)
    s.release = asyncio.Event()
    h: Harness = await make_harness(dest("crm", flow={"concurrency": 2}))
    await h.engine().start()
    await h.add(*[f"led_{i}" for i in range(6)])
    await eventually(lambda: len(s.calls) >= 2, "two sends in flight")
    for _ in range(20):  # give a third send every chance to start
        await asyncio.sleep(0)
    assert len(s.calls) == 2  # the others wait for a slot
    s.release.set()
    for i in range(6):
        assert (await h.settle(f"led_{i}", "crm")).status == "delivered"
    assert len(s.calls) == 6


async def test_permanent_error_is_dead_after_one_attempt(make_harness: Callable[..., Any]) -> None:
    s = script("crm", PermanentError("HTTP 400: REQUIRED_FIELD_MISSING: LastName", status_code=400))
    h: Harness = await make_harness(dest("crm"))
    await h.engine().start()
    await h.add("led_1")
    row = await h.settle("led_1", "crm")
    assert (row.status, row.attempts, row.last_status_code) == ("dead", 1, 400)
    assert row.last_error == "HTTP 400: REQUIRED_FIELD_MISSING: LastName"
    assert len(s.calls) == 1


async def test_auth_error_reauthenticates_once_then_dead(make_harness: Callable[..., Any]) -> None:
    s = script(
        "crm", AuthError("HTTP 401: INVALID_SESSION_ID"), AuthError("HTTP 401: INVALID_SESSION_ID")
    )
    h: Harness = await make_harness(dest("crm"))
    await h.engine().start()
    await h.add("led_1")
    row = await h.settle("led_1", "crm")
    assert row.status == "dead"
    assert (
        row.last_error == "check the credentials of destination crm: HTTP 401: INVALID_SESSION_ID"
    )
    assert (s.reauths, len(s.calls)) == (1, 2)


async def test_auth_error_then_success_after_reauthentication(
    make_harness: Callable[..., Any],
) -> None:
    s = script("crm", AuthError("HTTP 401: session expired"))
    h: Harness = await make_harness(dest("crm"))
    await h.engine().start()
    await h.add("led_1")
    row = await h.settle("led_1", "crm")
    assert (row.status, row.attempts, s.reauths) == ("delivered", 1, 1)


async def test_auth_error_without_renewable_credentials_is_dead_at_once(
    make_harness: Callable[..., Any],
) -> None:
    s = script("hook", AuthError("HTTP 403"))
    h: Harness = await make_harness(dest("hook", type="tests.fakes:NoReauthConnector"))
    await h.engine().start()
    await h.add("led_1")
    row = await h.settle("led_1", "hook")
    assert row.status == "dead" and "check the credentials of destination hook" in (
        row.last_error or ""
    )
    assert len(s.calls) == 1


async def test_rate_limit_retry_after_pauses_the_whole_destination(
    make_harness: Callable[..., Any],
) -> None:
    s = script("crm", RateLimited("HTTP 429", status_code=429, retry_after=120))
    h: Harness = await make_harness(dest("crm", flow={"concurrency": 1}))
    await h.engine().start()
    t0 = h.clock.time()
    await h.add("led_1")
    for _ in range(200):
        if len(s.calls) == 1 and (await h.delivery("led_1", "crm")).attempts == 1:
            break
        await asyncio.sleep(0.005)
    row = await h.delivery("led_1", "crm")
    assert row.next_attempt_at == pytest.approx(t0 + 120)
    # What the `destination paused` alert reads (lead_bridge_destination_paused_seconds).
    assert h.metrics.pauses.until["crm"] == pytest.approx(t0 + 120)
    await h.add("led_2")  # due now, but the destination is paused
    await asyncio.sleep(0.1)
    assert [c.lead_id for c in s.calls] == ["led_1"]
    await h.settle("led_1", "crm")
    await h.settle("led_2", "crm")
    assert all(c.at >= t0 + 120 for c in s.calls[1:])


async def test_gives_up_after_max_age(make_harness: Callable[..., Any]) -> None:
    script("crm", *[RetryableError("HTTP 502", status_code=502)] * 100)
    h: Harness = await make_harness(dest("crm", retry={"max_age": "1h"}))
    await h.engine().start()
    await h.add("led_1")
    row = await h.settle("led_1", "crm")
    assert row.status == "dead"
    assert row.attempts == 4  # at 0s, 5s, 305s, 2105s; the next (9305s) would pass 1h
    assert row.last_error is not None and row.last_error.startswith(
        "gave up after 4 attempt(s) over 35m (max_age 60m)"
    )
    assert row.last_error.endswith("last error: HTTP 502")


async def test_unclassified_exception_is_retried_and_logged_with_traceback(
    make_harness: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    script("crm", ZeroDivisionError("boom"))
    h: Harness = await make_harness(dest("crm"))
    await h.engine().start()
    with caplog.at_level(logging.ERROR, logger="lead_bridge.engine"):
        await h.add("led_1")
        row = await h.settle("led_1", "crm")
    assert (row.status, row.attempts) == ("delivered", 2)
    [first, _] = await h.store.get_attempts("led_1")
    assert first.error == "unexpected error: ZeroDivisionError: boom"
    assert "event=unclassified_error" in caplog.text
    assert any(r.exc_info or r.exc_text for r in caplog.records)


async def test_when_filter_skips_and_lead_is_unrouted(make_harness: Callable[..., Any]) -> None:
    script("us")
    h: Harness = await make_harness(
        dest("us", when={"field": "data.organization_country", "equals": "Canada"})
    )
    await h.engine().start()
    await h.add("led_1")
    row = await h.settle("led_1", "us")
    assert row.status == "skipped"
    assert SCRIPTS["us"].calls == []
    assert (await h.store.status(h.clock.time())).unrouted == 1


async def test_mapping_error_is_a_dead_letter_naming_the_field(
    make_harness: Callable[..., Any],
) -> None:
    script("crm")
    h: Harness = await make_harness(
        dest("crm", mapping={"Email": {"source": "data.email", "required": True}})
    )
    await h.engine().start()
    await h.add("led_1", email="")
    row = await h.settle("led_1", "crm")
    assert row.status == "dead"
    assert row.last_error is not None and row.last_error.startswith("mapping error: Email")
    assert SCRIPTS["crm"].calls == []


async def test_records_idempotency_key_and_mapped_record(make_harness: Callable[..., Any]) -> None:
    s = script("crm")
    h: Harness = await make_harness(dest("crm", mapping={"Email": "data.email", "Id": "id"}))
    await h.engine().start()
    await h.add("led_1")
    await h.settle("led_1", "crm")
    [call] = s.calls
    assert call.record == {"Email": "sergunich@gmail.com", "Id": "led_1"}
    assert call.idempotency_key == idempotency_key("led_1", "crm")


# --------------------------------------------------------------------------- isolation and leases


async def test_a_stuck_destination_does_not_delay_another(make_harness: Callable[..., Any]) -> None:
    stuck = script("slow", "block")
    stuck.release = asyncio.Event()
    fast = script("fast")
    h: Harness = await make_harness(dest("slow"), dest("fast"))
    await h.engine().start()
    await h.add("led_1", "led_2", "led_3")
    for lead in ("led_1", "led_2", "led_3"):
        assert (await h.settle(lead, "fast")).status == "delivered"
    assert (await h.delivery("led_1", "slow")).leased or (await h.delivery("led_2", "slow")).leased
    assert len(fast.calls) == 3
    stuck.release.set()
    for lead in ("led_1", "led_2", "led_3"):
        assert (await h.settle(lead, "slow")).status == "delivered"


async def test_expired_lease_is_fenced(make_harness: Callable[..., Any]) -> None:
    first = script("crm", "block")
    first.release = asyncio.Event()
    h: Harness = await make_harness(dest("crm", retry={"timeout": "5s"}), worker={"lease": "20s"})
    a = h.engine()
    await a.start()
    await h.add("led_1")
    while not first.calls:
        await asyncio.sleep(0.005)
    # Worker A hangs past its lease; worker B takes the delivery over and succeeds.
    h.clock.advance(3600)
    b = h.engine()
    await b.start()
    row = await h.settle("led_1", "crm")
    assert (row.status, row.attempts) == ("delivered", 1)
    # A wakes up late: its result must not overwrite B's.
    first.release.set()
    await asyncio.sleep(0.05)
    row = await h.delivery("led_1", "crm")
    assert (row.status, row.attempts) == ("delivered", 1)
    assert len(await h.store.get_attempts("led_1")) == 1


async def test_stop_releases_leases_of_unfinished_attempts(
    make_harness: Callable[..., Any],
) -> None:
    s = script("crm", "block", "block")
    s.release = asyncio.Event()
    h: Harness = await make_harness(dest("crm"))
    engine = h.engine()
    await engine.start()
    await h.add("led_1", "led_2")
    while len(s.calls) < 2:
        await asyncio.sleep(0.005)
    await engine.stop(0.1)
    for lead in ("led_1", "led_2"):
        row = await h.delivery(lead, "crm")
        assert row.status == "pending" and not row.leased
        assert row.next_attempt_at is not None and row.next_attempt_at <= h.clock.time()


# --------------------------------------------------------------------------- replay


async def test_replay_dead_after_the_destination_is_fixed(make_harness: Callable[..., Any]) -> None:
    s = script("crm", PermanentError("HTTP 400: bad field"), PermanentError("HTTP 400: bad field"))
    h: Harness = await make_harness(dest("crm"))
    await h.engine().start()
    await h.add("led_1", "led_2")
    assert (await h.settle("led_1", "crm")).status == "dead"
    assert (await h.settle("led_2", "crm")).status == "dead"
    s.actions.clear()  # the destination is fixed
    result = await h.store.replay(now=h.clock.time(), dead_only=True)
    assert result.requeued == 2
    h.engines[0].wake()
    for lead in ("led_1", "led_2"):
        row = await h.settle(lead, "crm")
        assert (row.status, row.attempts) == ("delivered", 2)
    refused = await h.store.replay(now=h.clock.time(), lead_id="led_1")
    assert (refused.requeued, refused.refused_delivered) == (0, 1)
    forced = await h.store.replay(now=h.clock.time(), lead_id="led_1", force=True)
    assert forced.requeued == 1
    assert (await h.settle("led_1", "crm")).attempts == 3


class CountingStore:
    """Just enough of a store for the Finisher: records each finish call."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[int]] = []
        self.fail = fail
        self.committing = asyncio.Event()

    async def finish(self, outcomes: list[Outcome]) -> list[bool]:
        self.calls.append([o.delivery_id for o in outcomes])
        self.committing.set()
        await asyncio.sleep(0.01)  # a commit takes a while; more outcomes queue meanwhile
        if self.fail:
            raise StoreUnavailable("disk full")
        return [o.delivery_id % 2 == 0 for o in outcomes]


def outcome(delivery_id: int) -> Outcome:
    return Outcome(delivery_id, "tok", "delivered", "delivered", 0.0, 0.1)


async def test_finisher_groups_outcomes_per_commit() -> None:
    store = CountingStore()
    rtts: list[float] = []
    finisher = Finisher(store, rtts.append)  # type: ignore[arg-type]
    first = asyncio.gather(*(finisher.finish(outcome(i)) for i in range(3)))
    await store.committing.wait()  # the first commit is under way
    second = asyncio.gather(*(finisher.finish(outcome(i)) for i in range(3, 6)))
    assert await first == [True, False, True]
    assert await second == [False, True, False]
    assert store.calls == [[0, 1, 2], [3, 4, 5]]
    assert len(rtts) == 2 and all(rtt >= 0.01 for rtt in rtts)


async def test_finisher_reports_store_errors_to_every_caller() -> None:
    finisher = Finisher(CountingStore(fail=True), lambda _: None)  # type: ignore[arg-type]
    results = await asyncio.gather(
        *(finisher.finish(outcome(i)) for i in range(2)), return_exceptions=True
    )
    assert all(isinstance(r, StoreUnavailable) for r in results)


# --------------------------------------------------------------------------- connector startup


async def test_refused_credentials_at_startup_are_a_dead_letter(
    make_harness: Callable[..., Any],
) -> None:
    s = script("crm")
    s.startup_errors = [AuthError("HTTP 400: invalid_client")] * 5
    h: Harness = await make_harness(dest("crm"))
    await h.engine().start()
    await h.add("led_1")
    row = await h.settle("led_1", "crm")
    assert row.status == "dead"
    assert row.last_error == "check the credentials of destination crm: HTTP 400: invalid_client"
    assert s.calls == []


async def test_unreachable_at_startup_is_retried_on_the_schedule(
    make_harness: Callable[..., Any],
) -> None:
    s = script("crm")
    s.startup_errors = [RetryableError("token endpoint unreachable")]
    h: Harness = await make_harness(dest("crm"))
    await h.engine().start()
    await h.add("led_1")
    for _ in range(400):
        row = await h.delivery("led_1", "crm")
        if row.attempts == 1:
            break
        await asyncio.sleep(0.005)
    [first] = await h.store.get_attempts("led_1")
    assert (first.outcome, first.error) == ("retry", "token endpoint unreachable")
    h.clock.advance(60)  # past the schedule's first delay and the startup back-off
    row = await h.settle("led_1", "crm")
    assert (row.status, row.attempts) == ("delivered", 2)
    assert s.startups == 2 and len(s.calls) == 1


async def test_long_rate_limit_pause_gives_leases_back_instead_of_holding_them(
    make_harness: Callable[..., Any],
) -> None:
    s = script("crm", RateLimited("HTTP 429 DAILY", status_code=429, retry_after=3600))
    h: Harness = await make_harness(dest("crm", flow={"concurrency": 1}), worker={"lease": "60s"})
    await h.engine().start()
    t0 = h.clock.time()
    await h.add(*[f"led_{i}" for i in range(5)])
    for _ in range(400):
        rows = [await h.delivery(f"led_{i}", "crm") for i in range(5)]
        if all(not r.leased for r in rows) and any(r.attempts for r in rows):
            break
        await asyncio.sleep(0.005)
    # Nothing is held under a lease during the hour-long pause (claimed ones are
    # given back, due when it ends; the others are not claimed meanwhile).
    assert all(not r.leased for r in rows), rows
    assert all(r.next_attempt_at in (t0, pytest.approx(t0 + 3600)) for r in rows)
    h.clock.advance(1800)
    h.engines[0].wake()
    await asyncio.sleep(0.1)
    assert len(s.calls) == 1
    for i in range(5):
        assert (await h.settle(f"led_{i}", "crm")).status == "delivered"
    sent = [c.lead_id for c in s.calls]
    assert sorted(sent[1:]) == [f"led_{i}" for i in range(5)]  # each once after the pause
    assert all(c.at >= t0 + 3600 for c in s.calls[1:])


# --------------------------------------------------------------------------- issue 12 items 1-7


async def wait_attempts(h: Harness, lead_id: str, destination: str, count: int) -> None:
    async def recorded() -> bool:
        return (
            len([a for a in await h.store.get_attempts(lead_id) if a.destination == destination])
            >= count
        )

    await eventually(recorded, f"{count} attempt(s) of {lead_id}")


@pytest.mark.parametrize(
    ("error", "retry", "pause"),
    [
        (RateLimited("HTTP 429", status_code=429, retry_after=1e12), {}, 3600.0),
        (
            RateLimited("HTTP 429", status_code=429, retry_after=1e12),
            {"max_retry_after": "2m"},
            120.0,
        ),
        (RateLimited("HTTP 429", status_code=429, retry_after=1e12), {"max_age": "30m"}, 1800.0),
        (RetryableError("HTTP 503", status_code=503, retry_after=1e12), {}, 3600.0),
    ],
)
async def test_an_absurd_retry_after_is_bounded(
    make_harness: Callable[..., Any], error: RetryableError, retry: dict[str, Any], pause: float
) -> None:
    # Issue 12 item 1: `now + 1e12` froze the destination until a restart.
    s = script("crm", error)
    h: Harness = await make_harness(dest("crm", retry=retry, flow={"concurrency": 1}))
    await h.engine().start()
    t0 = h.clock.time()
    await h.add("led_1")
    await wait_attempts(h, "led_1", "crm", 1)
    row = await h.delivery("led_1", "crm")
    assert row.status == "pending" and row.next_attempt_at == pytest.approx(t0 + pause)
    await h.add("led_2")
    for lead in ("led_1", "led_2"):
        assert (await h.settle(lead, "crm")).status == "delivered"
    assert max(c.at for c in s.calls) <= t0 + pause + 1


async def test_no_request_leaves_while_the_destination_is_paused(
    make_harness: Callable[..., Any],
) -> None:
    # Issue 12 item 2: attempts already waiting for a rate-limit token went out
    # during the pause a 429 had just set.
    s = script("crm", ("block", RateLimited("HTTP 429", status_code=429, retry_after=10)))
    s.release = asyncio.Event()
    h: Harness = await make_harness(
        dest("crm", flow={"concurrency": 4, "rate_per_second": 1, "burst": 1})
    )
    waiting = asyncio.Event()  # an attempt waits for a token
    proceed = asyncio.Event()

    async def gated_sleep(seconds: float) -> None:
        waiting.set()
        await proceed.wait()
        h.clock.advance(seconds)

    engine = Engine(
        h.store,
        h.runtime.active,
        h.metrics,
        h.runtime.config.worker,
        clock=h.clock.time,
        monotonic=h.clock.time,
        sleep=gated_sleep,
    )
    h.engines.append(engine)
    await engine.start()
    t0 = h.clock.time()
    await h.add("led_1", "led_2", "led_3")
    await eventually(lambda: len(s.calls) == 1 and waiting.is_set(), "one sent, one waiting")
    s.release.set()  # the first send is answered 429: paused until t0 + 10
    await wait_attempts(h, s.calls[0].lead_id, "crm", 1)
    # What the console shows: paused (rate limited) until t0 + 10.
    state = engine.destination_states()["crm"]
    assert (state["paused"], state["paused_until"], state["rate_limited_at"]) == (
        True,
        t0 + 10,
        t0,
    )
    assert state["worker_running"] is True
    proceed.set()  # the waiting attempt gets its token at t0 + 1, inside the pause
    for lead in ("led_1", "led_2", "led_3"):
        assert (await h.settle(lead, "crm")).status == "delivered"
    assert [c.at >= t0 + 10 for c in s.calls[1:]] == [True] * 3, [c.at - t0 for c in s.calls]
    assert len(s.calls) == 4  # nothing sent twice, nothing lost


async def test_rate_limited_attempts_do_not_use_the_leads_backoff(
    make_harness: Callable[..., Any],
) -> None:
    # Issue 12 item 3: two 429s and a 502 scheduled the next try 30 minutes out.
    s = script(
        "crm",
        RateLimited("HTTP 429", status_code=429, retry_after=10),
        RateLimited("HTTP 429", status_code=429, retry_after=10),
        RetryableError("HTTP 502", status_code=502),
    )
    h: Harness = await make_harness(dest("crm"))
    await h.engine().start()
    t0 = h.clock.time()
    await h.add("led_1")
    row = await h.settle("led_1", "crm")
    assert (row.status, row.attempts) == ("delivered", 2)  # the 502 and the success
    assert [round(c.at - t0) for c in s.calls] == [0, 10, 20, 25]  # 502 -> first step, 5 s
    attempts = await h.store.get_attempts("led_1")
    assert [a.outcome for a in attempts] == ["rate_limited", "rate_limited", "retry", "delivered"]
    assert [a.number for a in attempts] == [1, 1, 1, 2]
    assert [c.attempt for c in s.calls] == [1, 1, 1, 2]


async def test_rate_limited_for_longer_than_max_age_gives_up(
    make_harness: Callable[..., Any],
) -> None:
    script("crm", *[RateLimited("HTTP 429", status_code=429, retry_after=600)] * 10)
    h: Harness = await make_harness(dest("crm", retry={"max_age": "25m"}))
    await h.engine().start()
    await h.add("led_1")
    row = await h.settle("led_1", "crm")
    assert (row.status, row.attempts) == ("dead", 1)  # the give-up is the one attempt counted
    assert row.last_error == (
        "gave up: rate limited after 20m, the pause would pass max_age 25m; last error: HTTP 429"
    )


async def test_the_lease_outlasts_the_wait_for_a_rate_limit_token(
    make_harness: Callable[..., Any],
) -> None:
    # Issue 12 item 5: the token wait was outside every bound, so an attempt could
    # send after its lease had expired (and another worker could send it too).
    h: Harness = await make_harness(
        dest("crm", retry={"timeout": "5s"}, flow={"concurrency": 1, "rate_per_second": 0.04}),
        worker={"lease": "1s"},
    )
    lease_left: list[float] = []

    async def check_lease(context: Any) -> str:
        row = await h.delivery(context.lead_id, "crm")
        assert row.next_attempt_at is not None
        lease_left.append(row.next_attempt_at - h.clock.time())
        return "ok"

    script("crm", check_lease, check_lease, check_lease)
    engine = h.engine()
    await engine.start()
    [worker] = engine.workers
    assert worker.lease >= worker.budget + 10  # the lease is computed from the deadline
    await h.add("led_1", "led_2", "led_3")
    for lead in ("led_1", "led_2", "led_3"):
        assert (await h.settle(lead, "crm")).status == "delivered"
    assert len(lease_left) == 3 and min(lease_left) > 0, lease_left
    for lead in ("led_1", "led_2", "led_3"):  # deferred waits are not attempts
        assert (await h.delivery(lead, "crm")).attempts == 1


async def test_a_crashed_worker_loop_is_restarted_and_shown_down_meanwhile(
    make_harness: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 12 item 6: an exception other than a StoreError ended the loop silently.
    script("crm")
    h: Harness = await make_harness(dest("crm"))
    claim = h.store.claim
    failing = True

    async def broken_claim(**kw: Any) -> Any:
        if failing:
            raise OSError(24, "Too many open files")
        return await claim(**kw)

    h.store.claim = broken_claim  # type: ignore[method-assign]
    engine = h.engine()
    with caplog.at_level(logging.ERROR, logger="lead_bridge.engine"):
        await engine.start()
        await h.add("led_1")
        await eventually(lambda: engine.workers_down() == ["crm"], "the worker shown down")
        assert h.metrics.workers_down() == ["crm"]
        assert engine.destination_states()["crm"]["worker_running"] is False
        await eventually(lambda: engine.workers[0].restarts >= 2, "restarts with backoff")
        failing = False
        assert (await h.settle("led_1", "crm")).status == "delivered"
    assert engine.workers_down() == [] and h.metrics.workers_down() == []
    assert engine.worker_running("crm")
    restarts = h.metrics.worker_restarts.labels("crm")._value.get()  # type: ignore[attr-defined]
    assert restarts == engine.workers[0].restarts >= 2
    assert "event=worker_crashed destination=crm error=OSError errno=24" in caplog.text


async def test_a_lead_that_cannot_be_encoded_is_dead_at_once(
    make_harness: Callable[..., Any], tmp_path: Any
) -> None:
    # Issue 12 item 7: stored before intake refused it, a lone surrogate failed
    # every attempt for 72 h with a traceback. Now: one attempt, a readable reason.
    h: Harness = await make_harness(
        {"name": "file", "type": "jsonl", "settings": {"path": str(tmp_path / "out.jsonl")}}
    )
    await h.engine().start()
    payload = '{"id":"x","data":{"a":"\\ud800"}}'
    await h.store.ingest([LeadIn("x", payload)], ["file"], [], h.clock.time())
    h.engines[0].wake()
    row = await h.settle("x", "file")
    assert (row.status, row.attempts) == ("dead", 1)
    assert row.last_error == (
        "the record holds text that cannot be encoded (UnicodeEncodeError: surrogates not "
        "allowed; e.g. a lone surrogate such as \\ud800): retrying cannot help"
    )
