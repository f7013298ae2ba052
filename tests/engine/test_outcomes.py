"""What an attempt means for its lead: delivered, retried on the schedule, dead with a reason, skipped."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from bridge.engine import idempotency_key
from bridge.errors import PermanentError, RateLimited, RetryableError
from bridge.store.base import LeadIn
from tests.engine.harness import (
    Harness,
    dest,
    script,
    wait_attempts,
)


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


async def test_permanent_error_is_dead_after_one_attempt(make_harness: Callable[..., Any]) -> None:
    s = script("crm", PermanentError("HTTP 400: REQUIRED_FIELD_MISSING: LastName", status_code=400))
    h: Harness = await make_harness(dest("crm"))
    await h.engine().start()
    await h.add("led_1")
    row = await h.settle("led_1", "crm")
    assert (row.status, row.attempts, row.last_status_code) == ("dead", 1, 400)
    assert row.last_error == "HTTP 400: REQUIRED_FIELD_MISSING: LastName"
    assert len(s.calls) == 1


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
    s = script("us")
    h: Harness = await make_harness(
        dest("us", when={"field": "data.organization_country", "equals": "Canada"})
    )
    await h.engine().start()
    await h.add("led_1")
    row = await h.settle("led_1", "us")
    assert row.status == "skipped"
    assert s.calls == []
    assert (await h.store.status(h.clock.time())).unrouted == 1


async def test_mapping_error_is_a_dead_letter_naming_the_field(
    make_harness: Callable[..., Any],
) -> None:
    s = script("crm")
    h: Harness = await make_harness(
        dest("crm", mapping={"Email": {"source": "data.email", "required": True}})
    )
    await h.engine().start()
    await h.add("led_1", email="")
    row = await h.settle("led_1", "crm")
    assert row.status == "dead"
    assert row.last_error is not None and row.last_error.startswith("mapping error: Email")
    assert s.calls == []


async def test_records_idempotency_key_and_mapped_record(make_harness: Callable[..., Any]) -> None:
    s = script("crm")
    h: Harness = await make_harness(dest("crm", mapping={"Email": "data.email", "Id": "id"}))
    await h.engine().start()
    await h.add("led_1")
    await h.settle("led_1", "crm")
    [call] = s.calls
    assert call.record == {"Email": "sergunich@gmail.com", "Id": "led_1"}
    assert call.idempotency_key == idempotency_key("led_1", "crm")


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
