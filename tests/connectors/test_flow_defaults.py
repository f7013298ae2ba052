"""Each built-in connector's default rate stays under the limit its service documents."""

from __future__ import annotations

import pytest

from bridge import registry
from bridge.retry import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def busiest_window(times: list[float], window: float) -> int:
    """The most requests in any half-open interval [t, t + window)."""
    best = start = 0
    for end, at in enumerate(times):
        while times[start] <= at - window:
            start += 1
        best = max(best, end - start + 1)
    return best


async def sent_times(rate: float, burst: int, count: int) -> list[float]:
    """When ``count`` requests go out, each as soon as the bucket allows."""
    clock = Clock()
    bucket = TokenBucket(rate, burst, clock=clock.time, sleep=clock.sleep)
    times = []
    for _ in range(count):
        await bucket.acquire()
        times.append(clock.now)
    return times


LIMITED = [
    name
    for name in sorted(registry.BUILTINS)
    if registry.resolve(name, "type").flow_defaults.documented_limit is not None
]


def test_services_with_a_request_rate_limit_declare_it() -> None:
    # Salesforce limits requests per 24 h org-wide, webhook and jsonl have none.
    assert LIMITED == ["hubspot", "slack"]


@pytest.mark.parametrize("type_name", LIMITED)
async def test_default_rate_stays_under_the_documented_limit(type_name: str) -> None:
    flow = registry.resolve(type_name, "type").flow_defaults
    assert flow.documented_limit is not None
    limit, seconds = flow.documented_limit
    assert flow.rate_per_second is not None, "a documented limit needs a default rate"
    burst = flow.burst or max(1, int(flow.rate_per_second))
    times = await sent_times(flow.rate_per_second, burst, count=limit * 5)
    assert busiest_window(times, seconds) <= limit


async def test_the_old_hubspot_default_was_over_its_limit() -> None:
    # 10/s with a burst of 10 let 109 requests out within 10 s (HubSpot allows 100).
    assert busiest_window(await sent_times(10, 10, 500), 10.0) > 100


def test_hubspot_default_keeps_a_margin() -> None:
    flow = registry.resolve("hubspot", "type").flow_defaults
    assert flow.rate_per_second is not None and flow.burst is not None
    assert flow.burst + flow.rate_per_second * 10 <= 95
