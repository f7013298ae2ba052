"""Pauses (a 429, the API budget guard) hold the whole destination; no request leaves meanwhile."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from bridge.engine import Engine
from bridge.errors import RateLimited
from connectors.base import ApiUsage
from tests.engine.harness import (
    Harness,
    batching,
    dest,
    script,
    wait_attempts,
)
from tests.waiting import eventually


async def test_rate_limit_retry_after_pauses_the_whole_destination(
    make_harness: Callable[..., Any],
) -> None:
    s = script("crm", RateLimited("HTTP 429", status_code=429, retry_after=120))
    h: Harness = await make_harness(dest("crm", flow={"concurrency": 1}))
    await h.engine().start()
    t0 = h.clock.time()
    await h.add("led_1")

    async def deferred() -> bool:  # (being rate limited does not count as an attempt)
        row = await h.delivery("led_1", "crm")
        return len(s.calls) == 1 and not row.leased and row.next_attempt_at == t0 + 120

    await eventually(deferred, "led_1 deferred by the Retry-After")
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


async def test_long_rate_limit_pause_gives_leases_back_instead_of_holding_them(
    make_harness: Callable[..., Any],
) -> None:
    s = script("crm", RateLimited("HTTP 429 DAILY", status_code=429, retry_after=3600))
    h: Harness = await make_harness(dest("crm", flow={"concurrency": 1}), worker={"lease": "60s"})
    await h.engine().start()
    t0 = h.clock.time()
    await h.add(*[f"led_{i}" for i in range(5)])
    rows: list[Any] = []

    async def given_back() -> bool:
        rows[:] = [await h.delivery(f"led_{i}", "crm") for i in range(5)]
        paused = any(r.next_attempt_at == pytest.approx(t0 + 3600) for r in rows)
        return bool(s.calls) and paused and all(not r.leased for r in rows)

    await eventually(given_back, "the pause and every lease given back")
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


async def test_the_api_budget_guard_slows_then_pauses_the_destination(
    make_harness: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    s = script("crm")
    s.usage = ApiUsage(850, 1000)
    h: Harness = await make_harness(
        batching(flow={"api_budget": {"slow_interval": "10s", "recheck": "15m"}})
    )
    engine = h.engine()
    await engine.start()
    caplog.set_level(logging.INFO, logger="lead_bridge.engine")
    await h.add("led_1")
    await h.settle("led_1", "crm")
    state = engine.destination_states()["crm"]
    assert state["api_budget"] == {
        "state": "slow",
        "used": 850,
        "limit": 1000,
        "window": "daily",
        "share": 0.85,
    }
    assert "event=api_budget" in caplog.text and "state=slow" in caplog.text
    # Slow: calls at least slow_interval apart (on the engine's clock).
    await h.add("led_2")
    await h.settle("led_2", "crm")
    await h.add("led_3")
    await h.settle("led_3", "crm")
    gaps = [b.at - a.at for a, b in zip(s.calls, s.calls[1:], strict=False)]
    assert all(gap >= 10 for gap in gaps[1:]), gaps
    # Hard share: paused for recheck, with its reason, a metric and a log line.
    s.usage = ApiUsage(960, 1000)
    await h.add("led_4")
    await h.settle("led_4", "crm")
    state = engine.destination_states()["crm"]
    assert state["paused"] and state["pause_reason"] == "api_budget"
    assert state["paused_until"] == pytest.approx(h.clock.time() + 900, abs=1)
    assert state["api_budget"]["state"] == "paused"
    metrics = h.metrics.render()[0].decode()
    assert 'lead_bridge_api_budget_state{destination="crm",state="paused"} 1.0' in metrics
    assert 'lead_bridge_api_budget_used_ratio{destination="crm"} 0.96' in metrics
    calls = len(s.calls)
    await h.add("led_5")
    row = await h.delivery("led_5", "crm")
    assert row.status == "pending" and len(s.calls) == calls  # nothing sent while paused
    # The window frees: after recheck one call sees it and the destination goes on.
    s.usage = ApiUsage(100, 1000)
    h.clock.now = state["paused_until"]
    engine.wake()
    row = await h.settle("led_5", "crm")
    assert row.status == "delivered"
    assert engine.destination_states()["crm"]["api_budget"]["state"] == "ok"
    assert s.usage == ApiUsage(100, 1000)


async def test_a_connectors_further_requests_take_tokens_and_respect_a_pause(
    make_harness: Callable[..., Any],
) -> None:
    """Connector.next_request(): what a connector awaits before its second and
    later request within one call (the HubSpot resend) is the destination's own
    bucket and pause."""
    from bridge.engine.throttle import Throttle

    h: Harness = await make_harness(dest("crm", flow={"rate_per_second": 1, "burst": 2}))
    [destination] = h.runtime.active
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        h.clock.advance(seconds)

    throttle = Throttle(
        destination,
        h.metrics,
        clock=h.clock.time,
        monotonic=h.clock.time,
        sleep=sleep,
        on_pause=lambda: None,
    )
    await throttle.next_request()
    await throttle.next_request()  # the burst of 2
    assert slept == []
    await throttle.next_request()  # the third waits for a token
    assert slept and sum(slept) == pytest.approx(1.0)
    throttle.pause(h.clock.time(), 30)
    with pytest.raises(RateLimited) as info:
        await throttle.next_request()
    assert info.value.retry_after == pytest.approx(30)
