"""Intake first, delivery its share of the SQLite writer (bridge/store/writer_share.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.store.base import LeadIn, Outcome
from bridge.store.sqlite import SQLiteStore
from bridge.store.writer_share import WriterShare
from tests.conftest import make_lead
from tests.waiting import eventually


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Writes:
    """Delivery writes that stay at the writer until released."""

    def __init__(self, share: WriterShare) -> None:
        self.share = share
        self.inside = 0
        self.entered = 0
        self.release = asyncio.Event()

    async def write(self) -> None:
        async with self.share.delivery():
            self.inside += 1
            self.entered += 1
            await self.release.wait()
            self.inside -= 1

    def start(self, n: int) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self.write()) for _ in range(n)]


async def test_without_intake_delivery_writes_are_not_held() -> None:
    writes = Writes(WriterShare(clock=Clock()))
    tasks = writes.start(10)
    await eventually(lambda: writes.inside == 10, "all ten writes at the writer")
    writes.release.set()
    await asyncio.gather(*tasks)


async def test_while_intake_is_active_few_delivery_writes_go_at_once() -> None:
    share = WriterShare(clock=Clock(), in_flight=2)
    share.intake_done(share.intake_started(), 0.002, leads=1)
    writes = Writes(share)
    tasks = writes.start(5)
    await eventually(lambda: writes.inside == 2, "two writes at the writer")
    # The other three wait for a slot, not for time: they enter one by one as
    # slots free up.
    assert writes.entered == 2 and not any(t.done() for t in tasks)
    writes.release.set()
    await asyncio.gather(*tasks)
    assert writes.entered == 5


async def test_intake_slowed_by_delivery_widens_the_gap_and_then_closes_it() -> None:
    clock = Clock()
    share = WriterShare(clock=clock, max_gap=0.25, spacing=0)

    async def delivery_write(intake_beside: float) -> float:
        share.credit = 1.0  # (credit lets each write through; see the next test)
        async with share.delivery():
            # An intake write that meets this delivery write at the writer.
            share.intake_done(share.intake_started(), intake_beside, leads=0)
        return share.gap

    for _ in range(5):
        share.intake_done(share.intake_started(), 0.002, leads=0)  # alone: 2 ms
    gaps = [await delivery_write(0.010) for _ in range(10)]  # beside delivery: 10 ms
    assert gaps[0] > 0 and gaps == sorted(gaps) and gaps[-1] == 0.25  # doubling, capped
    gaps = [await delivery_write(0.002) for _ in range(40)]  # delivery no longer slows intake
    assert gaps[-1] == 0.0


async def test_intake_earns_delivery_its_floor_however_congested() -> None:
    clock = Clock()
    share = WriterShare(clock=clock, floor=0.2, max_gap=60.0, spacing=0)
    share.intake_done(share.intake_started(), 0.002, leads=0)
    share.gap, share.credit = 60.0, 0.0
    share._next_at = clock() + 60.0  # a long gap: the next write would wait a minute
    writes = Writes(share)
    [task] = writes.start(1)
    await asyncio.sleep(0)
    assert writes.entered == 0  # held by the gap
    share.intake_done(
        share.intake_started(), 0.050, leads=8
    )  # 8 leads written earn delivery 2 (20 % of 10)
    assert share.credit == pytest.approx(2.0)
    await eventually(lambda: writes.entered == 1, "the write let through on credit")
    writes.release.set()
    await task
    share.finished(2)
    assert share.credit == pytest.approx(0.0)


async def test_quiet_intake_ends_the_scheduling() -> None:
    clock = Clock()
    share = WriterShare(clock=clock, window=2.0, in_flight=1)
    share.intake_done(share.intake_started(), 0.002, leads=1)
    assert share.intake_active()
    clock.now += 2.5
    assert not share.intake_active()
    writes = Writes(share)
    tasks = writes.start(3)
    await eventually(lambda: writes.inside == 3, "every write at the writer")
    writes.release.set()
    await asyncio.gather(*tasks)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(f"sqlite:///{tmp_path / 'share.db'}")
    await s.open()
    yield s
    await s.close()


async def test_the_sqlite_store_times_intake_and_charges_delivery(store: SQLiteStore) -> None:
    assert not store.share.intake_active()
    leads = [LeadIn(f"led_{i}", json.dumps(make_lead(f"led_{i}"))) for i in range(8)]
    await store.ingest(leads, ["crm"], [], 1000.0)
    assert store.share.intake_active()
    credit = 8 * store.share.earn  # 8 leads written, delivery's share of them
    assert store.share.credit == pytest.approx(credit)
    claims = await store.claim(destination="crm", limit=8, lease_seconds=60, now=1001.0)
    outcomes = [
        Outcome(c.delivery_id, c.lease_token, "delivered", "delivered", 1001.0, 0.1) for c in claims
    ]
    assert await store.finish(outcomes) == [True] * 8
    assert store.share.credit == pytest.approx(credit - 8)
