"""Outcomes committed in batches, one store call per commit (bridge/engine/finisher.py)."""

from __future__ import annotations

import asyncio

from bridge.engine import outcome_finisher
from bridge.errors import StoreUnavailable
from bridge.store.base import Outcome


class CountingStore:
    """Just enough of a store for the finisher: records each finish call, and
    holds each commit until the test lets it go."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[int]] = []
        self.fail = fail
        self.committing = asyncio.Event()
        self.release = asyncio.Event()

    async def finish(self, outcomes: list[Outcome]) -> list[bool]:
        self.calls.append([o.delivery_id for o in outcomes])
        self.committing.set()
        await self.release.wait()  # more outcomes queue meanwhile
        if self.fail:
            raise StoreUnavailable("disk full")
        return [o.delivery_id % 2 == 0 for o in outcomes]


def outcome(delivery_id: int) -> Outcome:
    return Outcome(delivery_id, "tok", "delivered", "delivered", 0.0, 0.1)


async def test_finisher_groups_outcomes_per_commit() -> None:
    store = CountingStore()
    finisher = outcome_finisher(store)  # type: ignore[arg-type]
    first = asyncio.gather(*(finisher.submit(outcome(i)) for i in range(3)))
    await store.committing.wait()  # the first commit is under way
    second = asyncio.gather(*(finisher.submit(outcome(i)) for i in range(3, 6)))
    await asyncio.sleep(0)  # the second batch queued behind the first
    store.release.set()
    assert await first == [True, False, True]
    assert await second == [False, True, False]
    assert store.calls == [[0, 1, 2], [3, 4, 5]]


async def test_finisher_reports_store_errors_to_every_caller() -> None:
    store = CountingStore(fail=True)
    store.release.set()
    finisher = outcome_finisher(store)  # type: ignore[arg-type]
    results = await asyncio.gather(
        *(finisher.submit(outcome(i)) for i in range(2)), return_exceptions=True
    )
    assert all(isinstance(r, StoreUnavailable) for r in results)
