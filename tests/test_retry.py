"""Flow-control primitives of bridge/retry.py: pacing the engine while intake is busy."""

from __future__ import annotations

from bridge.retry import IntakeFirst


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def pacer(clock: Clock) -> IntakeFirst:
    return IntakeFirst(budget=0.003, window=2.0, period=0.02, floor=20.0, clock=clock)


def start_many(share: IntakeFirst, n: int) -> int:
    return sum(share.take() for _ in range(n))


def test_without_intake_nothing_is_limited() -> None:
    clock = Clock()
    share = pacer(clock)
    share.observe(0.5)  # a slow commit, but nobody is waiting for intake
    share.tick()
    assert share.rate is None
    assert start_many(share, 1000) == 1000


def test_congestion_halves_the_measured_rate_and_calm_grows_it_back() -> None:
    clock = Clock()
    share = pacer(clock)
    share.intake_active()
    assert start_many(share, 40) == 40  # 40 starts in one period: 2,000/s
    share.observe(0.010)
    share.tick()
    assert share.rate == 1000.0
    # The allowance is one period's worth, not a burst.
    assert start_many(share, 100) == 20
    share.observe(0.010)
    share.tick()
    assert share.rate == 500.0
    share.observe(0.001)  # below budget: additive and proportional growth
    share.tick()
    assert share.rate == 500.0 * 1.05 + 10.0


def test_rate_never_falls_below_the_floor() -> None:
    clock = Clock()
    share = pacer(clock)
    share.intake_active()
    for _ in range(30):
        share.observe(1.0)
        share.tick()
    assert share.rate == 20.0
    share.tick()
    assert start_many(share, 10) >= 1  # the engine still makes progress


def test_pacing_ends_when_intake_goes_quiet() -> None:
    clock = Clock()
    share = pacer(clock)
    share.intake_active()
    share.observe(0.010)
    share.tick()
    assert share.rate is not None
    clock.now += 2.5
    share.tick()
    assert share.rate is None
    assert start_many(share, 500) == 500
