"""A connector that cannot start: its deliveries fail with the reason, on the schedule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bridge.errors import AuthError, RetryableError
from tests.engine.harness import (
    Harness,
    dest,
    script,
)
from tests.waiting import eventually


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

    async def attempted() -> bool:
        return (await h.delivery("led_1", "crm")).attempts == 1

    await eventually(attempted, "the first attempt's outcome")
    [first] = await h.store.get_attempts("led_1")
    assert (first.outcome, first.error) == ("retry", "token endpoint unreachable")
    h.clock.advance(60)  # past the schedule's first delay and the startup back-off
    row = await h.settle("led_1", "crm")
    assert (row.status, row.attempts) == ("delivered", 2)
    assert s.startups == 2 and len(s.calls) == 1
