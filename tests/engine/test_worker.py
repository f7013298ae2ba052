"""A destination's claim loop: concurrency, isolation from other destinations, leases."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from bridge.errors import PermanentError
from tests.engine.harness import (
    Harness,
    dest,
    script,
)
from tests.waiting import eventually


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


async def test_expired_lease_is_fenced(
    make_harness: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    first = script("crm", "block")
    first.release = asyncio.Event()
    h: Harness = await make_harness(dest("crm", retry={"timeout": "5s"}), worker={"lease": "20s"})
    a = h.engine()
    await a.start()
    await h.add("led_1")
    await eventually(lambda: bool(first.calls), "A's send")
    # Worker A hangs past its lease; worker B takes the delivery over and succeeds.
    h.clock.advance(3600)
    b = h.engine()
    await b.start()
    row = await h.settle("led_1", "crm")
    assert (row.status, row.attempts) == ("delivered", 1)
    # A wakes up late: its result must not overwrite B's (its commit is refused).
    with caplog.at_level(logging.WARNING, logger="lead_bridge.engine"):
        first.release.set()
        await eventually(lambda: "event=lease_lost" in caplog.text, "A's commit to be refused")
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
    await eventually(lambda: len(s.calls) >= 2, "two sends in flight")
    await engine.stop(0.1)
    for lead in ("led_1", "led_2"):
        row = await h.delivery(lead, "crm")
        assert row.status == "pending" and not row.leased
        assert row.next_attempt_at is not None and row.next_attempt_at <= h.clock.time()


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
