"""Batched delivery: many leads per API call, each lead its own outcome (issue 16)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from bridge.errors import PermanentError, RateLimited, RetryableError
from tests.engine.harness import (
    Harness,
    batching,
    leased,
    script,
    waiting,
)
from tests.waiting import eventually


async def test_a_lone_lead_goes_at_once_and_a_backlog_goes_in_full_batches(
    make_harness: Callable[..., Any],
) -> None:
    s = script("crm", "block")
    s.release = asyncio.Event()
    h: Harness = await make_harness(batching(flow={"concurrency": 1}))
    engine = h.engine()
    await engine.start()
    await h.add("led_0")
    await eventually(lambda: len(s.calls) == 1, "len(s.calls) == 1")
    assert s.batches == []  # alone: the single send, not delayed for company
    leads = [f"led_{i}" for i in range(1, 6)]
    await h.add(*leads)
    # Claimed while the only slot is busy (two calls' worth are held): a backlog.
    await leased(h, *leads)
    s.release.set()
    for lead in ["led_0", *leads]:
        row = await h.settle(lead, "crm")
        assert (row.status, row.attempts) == ("delivered", 1)
    assert s.batches == [["led_1", "led_2", "led_3"], ["led_4", "led_5"]]
    assert engine.destination_states()["crm"]["batch_size"] == 3
    for lead in ["led_0", *leads]:
        [attempt] = await h.store.get_attempts(lead)  # one attempt row per lead
        assert attempt.outcome == "delivered"


async def test_partial_failure_gives_each_lead_its_own_outcome(
    make_harness: Callable[..., Any],
) -> None:
    s = script(
        "crm",
        "block",
        {
            "led_2": PermanentError("REQUIRED_FIELD_MISSING (fields: LastName)", status_code=400),
            "led_3": RetryableError("UNABLE_TO_LOCK_ROW", status_code=400),
        },
    )
    s.release = asyncio.Event()
    h: Harness = await make_harness(batching(flow={"concurrency": 1}))
    await h.engine().start()
    await h.add("led_0")
    await eventually(lambda: len(s.calls) == 1, "len(s.calls) == 1")
    await h.add("led_1", "led_2", "led_3")
    await leased(h, "led_1", "led_2", "led_3")
    t0 = h.clock.time()
    s.release.set()
    ok = await h.settle("led_1", "crm")
    assert (ok.status, ok.remote_id) == ("delivered", "rec-led_1")
    dead = await h.settle("led_2", "crm")
    assert (dead.status, dead.attempts) == ("dead", 1)
    assert dead.last_error == "REQUIRED_FIELD_MISSING (fields: LastName)"
    retried = await waiting(h, "led_3")
    assert retried.attempts == 1 and retried.next_attempt_at == pytest.approx(t0 + 5)
    retried = await h.settle("led_3", "crm")
    assert (retried.status, retried.attempts) == ("delivered", 2)
    assert [a.outcome for a in await h.store.get_attempts("led_3")] == ["retry", "delivered"]
    assert s.batches == [["led_1", "led_2", "led_3"]]  # led_3's retry went alone
    assert set(s.remote) == {"led_0", "led_1", "led_3"}


async def test_a_mapping_error_fails_only_its_lead(make_harness: Callable[..., Any]) -> None:
    s = script("crm", "block")
    s.release = asyncio.Event()
    h: Harness = await make_harness(
        batching(
            flow={"concurrency": 1},
            mapping={"Email": {"source": "data.email", "required": True}, "Id": "id"},
        )
    )
    await h.engine().start()
    await h.add("led_0")
    await eventually(lambda: len(s.calls) == 1, "len(s.calls) == 1")
    await h.add("led_1", "led_3")
    await h.add("led_2", email="")
    await leased(h, "led_1", "led_2", "led_3")
    s.release.set()
    row = await h.settle("led_2", "crm")
    assert row.status == "dead" and (row.last_error or "").startswith("mapping error: Email")
    for lead in ("led_1", "led_3"):
        assert (await h.settle(lead, "crm")).status == "delivered"
    assert s.batches == [["led_1", "led_3"]]


@pytest.mark.parametrize(
    ("error", "attempt_outcome", "counted"),
    [
        (RateLimited("HTTP 429", status_code=429, retry_after=30), "rate_limited", False),
        (RetryableError("HTTP 503", status_code=503), "retry", True),
    ],
)
async def test_a_whole_call_failure_retries_every_lead_of_the_batch(
    make_harness: Callable[..., Any], error: Exception, attempt_outcome: str, counted: bool
) -> None:
    s = script("crm", "block", error)
    s.release = asyncio.Event()
    h: Harness = await make_harness(batching(flow={"concurrency": 1}))
    engine = h.engine()
    await engine.start()
    await h.add("led_0")
    await eventually(lambda: len(s.calls) == 1, "len(s.calls) == 1")
    leads = ["led_1", "led_2", "led_3"]
    await h.add(*leads)
    await leased(h, *leads)
    t0 = h.clock.time()
    s.release.set()
    for lead in leads:
        row = await waiting(h, lead)
        # A 429 pauses the destination and spares the leads' backoff; a 503 is a step.
        assert row.attempts == (1 if counted else 0)
        assert row.next_attempt_at == pytest.approx(t0 + (5 if counted else 30))
    if not counted:
        assert engine.destination_states()["crm"]["paused"]
    for lead in leads:
        row = await h.settle(lead, "crm")
        assert (row.status, row.attempts) == ("delivered", 1 if not counted else 2)
        outcomes = [a.outcome for a in await h.store.get_attempts(lead)]
        assert outcomes == [attempt_outcome, "delivered"]
    assert s.batches == [leads, leads]


async def test_a_batch_killed_mid_call_is_sent_again_and_upserted_once(
    make_harness: Callable[..., Any],
) -> None:
    # The CRM applied the call, but its answer never arrived: the process stopped.
    s = script("crm", "block")
    s.release = asyncio.Event()
    h: Harness = await make_harness(batching(flow={"concurrency": 1}))
    first = h.engine()
    await first.start()
    leads = ["led_1", "led_2", "led_3"]
    await h.add(*leads)  # one commit: one claim, one batch
    await eventually(lambda: len(s.batches) == 1, "len(s.batches) == 1")
    await first.stop(0.1)
    for lead in leads:
        row = await h.delivery(lead, "crm")
        assert row.status == "pending" and not row.leased  # lease given back, not lost
    assert set(s.remote) >= set(leads)  # the CRM had them already
    s.release.set()
    await h.engine().start()
    for lead in leads:
        row = await h.settle(lead, "crm")
        assert row.status == "delivered"
    assert s.batches == [leads, leads]  # re-sent as a batch
    assert sorted(s.remote) == leads  # the upsert key: one record per lead
    for lead in leads:
        outcomes = [a.outcome for a in await h.store.get_attempts(lead)]
        assert outcomes == ["delivered"]  # the killed call left no attempt row


async def test_batch_wait_holds_a_lead_for_company(make_harness: Callable[..., Any]) -> None:
    s = script("crm")
    h: Harness = await make_harness(batching(flow={"batch_wait": "2s"}))
    await h.engine().start()
    loop = asyncio.get_running_loop()
    start = loop.time()
    await h.add("led_1")
    await leased(h, "led_1")
    await h.add("led_2")
    await eventually(lambda: len(s.batches) == 1, "len(s.batches) == 1")
    assert loop.time() - start >= 2.0
    assert s.batches == [["led_1", "led_2"]]
    assert s.calls and len(s.calls) == 2


async def test_batch_size_one_turns_batching_off(make_harness: Callable[..., Any]) -> None:
    s = script("crm", "block")
    s.release = asyncio.Event()
    h: Harness = await make_harness(batching(flow={"concurrency": 1, "batch_size": 1}))
    await h.engine().start()
    await h.add("led_0")
    await eventually(lambda: len(s.calls) == 1, "len(s.calls) == 1")
    await h.add("led_1", "led_2")
    await leased(h, "led_1")
    s.release.set()
    for lead in ("led_1", "led_2"):
        assert (await h.settle(lead, "crm")).status == "delivered"
    assert s.batches == []


async def test_one_rate_token_per_call_not_per_lead(make_harness: Callable[..., Any]) -> None:
    s = script("crm", "block")
    s.release = asyncio.Event()
    h: Harness = await make_harness(
        batching(batch=10, flow={"concurrency": 1, "rate_per_second": 1, "burst": 2})
    )
    engine = h.engine()
    await engine.start()
    await h.add("led_0")
    await eventually(lambda: len(s.calls) == 1, "len(s.calls) == 1")
    leads = [f"led_{i}" for i in range(1, 11)]
    await h.add(*leads)
    await leased(h, *leads)
    t0 = h.clock.time()
    s.release.set()
    for lead in leads:
        assert (await h.settle(lead, "crm")).status == "delivered"
    [worker] = engine.workers
    assert worker.throttle.bucket is not None
    # Burst 2: the first call took one, the batch of ten the other; no wait.
    assert s.batches == [leads] and h.clock.time() == t0


@pytest.mark.parametrize(
    ("flow", "path"),
    [
        ({"api_budget": {"soft_share": 0.9, "hard_share": 0.8}}, "flow.api_budget.hard_share"),
        ({"api_budget": {"soft_share": 1.5}}, "flow.api_budget.soft_share"),
        ({"batch_wait": "-1s"}, "flow.batch_wait"),
        ({"batch_wait": "2m"}, "flow.batch_wait"),
        ({"batch_size": 0}, "flow.batch_size"),
    ],
)
def test_flow_batching_settings_are_validated(
    make_runtime: Callable[..., Any], flow: dict[str, Any], path: str
) -> None:
    from bridge.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        make_runtime(destinations=[batching(flow=flow)])
    assert f"destinations[0].{path}" in str(caught.value)
