"""Shared by the engine tests: a scripted connector per destination, a fake clock, a real SQLite store."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from bridge.destinations import Runtime
from bridge.engine import Engine
from bridge.metrics import Metrics
from bridge.store.base import DeliveryRecord, LeadIn
from bridge.store.sqlite import SQLiteStore
from tests.conftest import make_lead
from tests.fakes import FakeClock, Script, current_scripts
from tests.waiting import DEADLINE, eventually

SCHEDULE = [5, 300, 1800, 7200]


def dest(name: str, script: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": extra.pop("type", "tests.fakes:ScriptedConnector"),
        "settings": {"script": script or name},
        "retry": {
            "schedule": SCHEDULE,
            "jitter": 0,
            "connect_retries": 1,
            **extra.pop("retry", {}),
        },
        **extra,
    }


class Harness:
    def __init__(self, runtime: Runtime, store: SQLiteStore, clock: FakeClock) -> None:
        self.runtime = runtime
        self.store = store
        self.clock = clock
        self.metrics = Metrics()
        self.engines: list[Engine] = []

    def engine(self) -> Engine:
        engine = Engine(
            self.store,
            self.runtime.active,
            self.metrics,
            self.runtime.config.worker,
            clock=self.clock.time,
            monotonic=self.clock.time,
            sleep=self.clock.sleep,
            rng=lambda: 0.5,
            restart_backoff=0.01,
        )
        self.engines.append(engine)
        return engine

    async def add(self, *lead_ids: str, **data: Any) -> None:
        leads = [LeadIn(i, json.dumps(make_lead(i, **data))) for i in lead_ids]
        names = [d.name for d in self.runtime.active]
        await self.store.ingest(leads, names, [], self.clock.time())
        for engine in self.engines:
            engine.wake()

    async def delivery(self, lead_id: str, destination: str) -> DeliveryRecord:
        [row] = [
            d for d in await self.store.get_deliveries(lead_id) if d.destination == destination
        ]
        return row

    async def settle(
        self,
        lead_id: str,
        destination: str,
        statuses: tuple[str, ...] = ("delivered", "dead", "skipped"),
    ) -> DeliveryRecord:
        """Advance the fake clock to each retry until the delivery is final."""
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            row = await self.delivery(lead_id, destination)
            if row.status in statuses:
                return row
            if row.status == "pending" and not row.leased and row.next_attempt_at is not None:
                if row.next_attempt_at > self.clock.time():
                    self.clock.now = row.next_attempt_at
                for engine in self.engines:
                    engine.wake()
            await asyncio.sleep(0.005)
        raise AssertionError(f"delivery did not settle: {row}")


def script(name: str, *actions: Any) -> Script:
    """Register the running test's script ``name`` (the ``scripts`` fixture)."""
    registered = current_scripts()[name] = Script(list(actions))
    return registered


BATCHING = "tests.fakes:BatchingConnector"


def batching(name: str = "crm", batch: int = 3, **extra: Any) -> dict[str, Any]:
    d = dest(name, type=BATCHING, **extra)
    d["settings"]["batch"] = batch
    return d


async def leased(h: Harness, *lead_ids: str) -> None:
    async def all_leased() -> bool:
        rows = [await h.delivery(lead, "crm") for lead in lead_ids]
        return all(row.leased for row in rows)

    await eventually(all_leased, f"{lead_ids} claimed")


async def waiting(h: Harness, lead: str) -> Any:
    """The delivery once its attempt is recorded and it waits for the next one."""
    rows = []

    async def back() -> bool:
        row = await h.delivery(lead, "crm")
        rows.append(row)
        return row.status == "pending" and not row.leased

    await eventually(back, f"{lead} pending again")
    return rows[-1]


async def wait_attempts(h: Harness, lead_id: str, destination: str, count: int) -> None:
    async def recorded() -> bool:
        return (
            len([a for a in await h.store.get_attempts(lead_id) if a.destination == destination])
            >= count
        )

    await eventually(recorded, f"{count} attempt(s) of {lead_id}")
