"""One attempt within its deadline: connection retries, one re-authentication, the lease outlasting the wait."""

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

    async def attempted() -> bool:
        return bool((await h.delivery("led_1", "crm")).attempts)

    await eventually(attempted, "the first attempt's outcome")
    row = await h.delivery("led_1", "crm")
    assert (
        row.status == "pending"
        and row.attempts == 1
        and "connection refused" in (row.last_error or "")
    )
    assert [c.attempt for c in s.calls[:3]] == [1, 1, 1]
    gaps = [b.at - a.at for a, b in zip(s.calls, s.calls[1:3], strict=False)]
    assert gaps == [0.5, 1.0]  # connect_retry_wait, then doubled


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
