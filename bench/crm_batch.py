"""CRM batching benchmark (issue 16): a burst of leads into the fake HubSpot and Salesforce.

    python bench/crm_batch.py                          # 5,000-lead bursts, 40 lone leads
    python bench/crm_batch.py --leads 300 --lone 3 --cap 20     # a quick smoke run

In one process, on one event loop, the delivery engine as `lead-bridge serve`
runs it, over a SQLite store in a temporary directory, against the repository's
fake servers (tests/connectors/fake_hubspot.py over HTTP, fake_salesforce.py
over TLS) through the real client libraries. Every figure is measured twice in
the same run: batched (the connector's batch size) and one lead per call
(``flow.batch_size: 1``).

* **HubSpot burst.** ``--leads`` leads committed at once (as after a provider's
  outage), the fake limited to 100 requests per rolling 10 s (429 beyond it),
  the destination at its defaults (≤ 95 requests per 10 s). Time from the
  commit to every delivery ``delivered``, API calls and 429s. One lead per call
  needs ≥ leads/10 s at that limit; when the run would pass ``--cap`` seconds it
  stops there and the time is **estimated** from the rate so far (marked ``~``).
  Target: batched ≤ 60 s and ≤ 0.02 calls per lead.
* **Salesforce burst.** The same burst into the fake Salesforce (external-id
  upserts): calls per lead (target ≤ 0.01) and deliveries per second, batched
  (sObject Collections, 200 per call) vs single upserts.
* **Lone lead.** ``--lone`` times, one lead at a time on an idle HubSpot
  destination: from the store commit (when intake answers 200) to the fake
  CRM receiving the call; p50 and max, batched vs unbatched (two engines side
  by side, taking turns). A lone lead must not wait for company.

Figures on a shared machine are noisy; compare the two columns of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bridge.destinations import load_runtime  # noqa: E402
from bridge.engine import Engine  # noqa: E402
from bridge.metrics import Metrics  # noqa: E402
from bridge.store.base import LeadIn  # noqa: E402
from bridge.store.sqlite import SQLiteStore  # noqa: E402

TOKEN = "pat-bench-token"


def lead(n: int, run: str) -> LeadIn:
    lead_id = f"led_{run}_{n:06d}"
    body = {
        "id": lead_id,
        "created": "2026-12-01T10:00:00Z",
        "data": {"email": f"lead{n}.{run}@example.com", "name": f"Lead {n}", "company": "Org"},
    }
    return LeadIn(lead_id, json.dumps(body))


class Run:
    """One engine over a fresh SQLite store, with one destination."""

    def __init__(self, workdir: Path, name: str, destination: dict[str, Any]) -> None:
        self.dir = workdir / name
        self.dir.mkdir(parents=True)
        config = {
            "server": {"behind_proxy": True},
            "storage": {"url": f"sqlite:///{self.dir / 'bench.db'}"},
            "worker": {"poll_interval": "50ms"},
            "destinations": [destination],
        }
        path = self.dir / "config.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.runtime = load_runtime(path, env={})
        self.dest = destination["name"]
        self.store = SQLiteStore(self.runtime.config.storage.url)
        self.engine: Engine | None = None

    async def __aenter__(self) -> Run:
        await self.store.open()
        self.engine = Engine(self.store, self.runtime.active, Metrics(), self.runtime.config.worker)
        await self.engine.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.engine is not None
        await self.engine.stop(5)
        await self.store.close()

    async def ingest(self, leads: list[LeadIn]) -> float:
        """Commit leads as intake does; return the monotonic time of the commit."""
        for start in range(0, len(leads), 500):
            await self.store.ingest(leads[start : start + 500], [self.dest], [], time.time())
        committed = time.monotonic()
        assert self.engine is not None
        self.engine.wake()
        return committed

    async def delivered(self) -> int:
        rows = await self.store.fetch(
            "SELECT count(*) FROM deliveries WHERE destination = ? AND status = 'delivered'",
            (self.dest,),
        )
        return int(rows[0][0])

    async def burst(self, count: int, cap: float) -> dict[str, Any]:
        """Commit ``count`` leads at once; wait until all are delivered or ``cap`` passes."""
        leads = [lead(n, self.dir.name) for n in range(count)]
        t0 = await self.ingest(leads)
        done = 0
        while True:
            await asyncio.sleep(0.1)
            done = await self.delivered()
            elapsed = time.monotonic() - t0
            if done >= count:
                return {"seconds": elapsed, "estimated": False, "delivered": done}
            if elapsed >= cap:
                rate = done / elapsed if done else 0.0
                estimate = count / rate if rate else float("inf")
                return {"seconds": estimate, "estimated": True, "delivered": done}


def hubspot_destination(url: str, name: str, batch_size: int | None) -> dict[str, Any]:
    flow: dict[str, Any] = {} if batch_size is None else {"batch_size": batch_size}
    return {
        "name": name,
        "type": "hubspot",
        "settings": {"access_token": TOKEN, "host": url, "allow_private": True},
        "mapping": {"email": "data.email", "firstname": "data.name"},
        "flow": flow,
    }


def salesforce_destination(settings: dict[str, Any], name: str, batch_size: int | None) -> Any:
    flow: dict[str, Any] = {} if batch_size is None else {"batch_size": batch_size}
    return {
        "name": name,
        "type": "salesforce",
        "settings": settings,
        "mapping": {
            "LastName": "data.name",
            "Company": "data.company",
            "Email": "data.email",
        },
        "flow": flow,
    }


async def hubspot_burst(workdir: Path, leads: int, cap: float) -> list[dict[str, Any]]:
    from tests.connectors.fake_hubspot import FakeHubSpot

    out = []
    for label, batch in (("batched", None), ("one per lead", 1)):
        with FakeHubSpot(access_token=TOKEN, limit_per_10s=100) as fake:
            name = f"hs_{'b' if batch is None else 's'}"
            async with Run(workdir, name, hubspot_destination(fake.url, name, batch)) as run:
                result = await run.burst(leads, cap)
            result |= {
                "mode": label,
                "calls": fake.upsert_calls,
                "rate_limited": fake.rate_limited,
                "calls_per_lead": fake.upsert_calls / max(1, result["delivered"]),
            }
        out.append(result)
    return out


async def salesforce_burst(workdir: Path, leads: int, cap: float) -> list[dict[str, Any]]:
    import trustme

    from tests.connectors.fake_salesforce import FakeSalesforce

    out = []
    ca = trustme.CA()
    for label, batch in (("batched", None), ("single upserts", 1)):
        with FakeSalesforce(ca) as fake:
            name = f"sf_{'b' if batch is None else 's'}"
            settings = fake.settings(external_id_field="Lead_Bridge_Id__c")
            async with Run(workdir, name, salesforce_destination(settings, name, batch)) as run:
                result = await run.burst(leads, cap)
            calls = len(fake.api_calls())
            result |= {
                "mode": label,
                "calls": calls,
                "calls_per_lead": calls / max(1, result["delivered"]),
                "per_second": result["delivered"] / result["seconds"]
                if not result["estimated"]
                else leads / result["seconds"],
            }
        out.append(result)
    return out


async def lone_leads(workdir: Path, count: int) -> list[dict[str, Any]]:
    """Both modes side by side (two fakes, two engines), alternating which goes
    first, so warm-up and machine noise fall on both alike."""
    from contextlib import AsyncExitStack, ExitStack

    from tests.connectors.fake_hubspot import FakeHubSpot

    modes = [("batched", None), ("unbatched", 1)]
    latencies: dict[str, list[float]] = {label: [] for label, _ in modes}
    with ExitStack() as fakes:
        async with AsyncExitStack() as runs:
            setups = []
            for label, batch in modes:
                fake = fakes.enter_context(FakeHubSpot(access_token=TOKEN))
                arrivals: list[float] = []
                answer: Callable[..., Any] = fake._answer

                def timed(
                    request: Any, answer: Callable[..., Any] = answer, seen: list[float] = arrivals
                ) -> Any:
                    seen.append(time.monotonic())
                    return answer(request)

                fake._answer = timed  # type: ignore[method-assign]
                name = f"lone_{'b' if batch is None else 's'}"
                destination = hubspot_destination(fake.url, name, batch)
                run = await runs.enter_async_context(Run(workdir, name, destination))
                setups.append((label, run, arrivals))
            for n in range(count):
                for label, run, arrivals in setups if n % 2 == 0 else setups[::-1]:
                    before = len(arrivals)
                    t0 = await run.ingest([lead(n, run.dir.name)])
                    while await run.delivered() < n + 1:
                        await asyncio.sleep(0.002)
                    latencies[label].append(arrivals[before] - t0)
    return [
        {
            "mode": label,
            "p50_ms": statistics.median(values) * 1000,
            "max_ms": max(values) * 1000,
        }
        for label, values in latencies.items()
    ]


def _seconds(result: dict[str, Any]) -> str:
    return f"{'~' if result['estimated'] else ''}{result['seconds']:.1f} s"


async def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="lead-bridge-crm-batch-", dir="/var/tmp") as tmp:
        workdir = Path(tmp)
        print(f"HubSpot burst: {args.leads} leads, fake limited to 100 requests / 10 s")
        for r in await hubspot_burst(workdir, args.leads, args.cap):
            print(
                f"  {r['mode']:<15} {_seconds(r):>10}  calls {r['calls']:>6}  "
                f"calls/lead {r['calls_per_lead']:.4f}  429s {r['rate_limited']}  "
                f"delivered {r['delivered']}"
                + ("  (stopped at --cap; time estimated from the rate)" if r["estimated"] else "")
            )
        print(f"Salesforce burst: {args.leads} leads (external-id upserts)")
        for r in await salesforce_burst(workdir, args.leads, args.cap):
            print(
                f"  {r['mode']:<15} {_seconds(r):>10}  calls {r['calls']:>6}  "
                f"calls/lead {r['calls_per_lead']:.4f}  deliveries/s {r['per_second']:.0f}"
                + ("  (stopped at --cap; estimated)" if r["estimated"] else "")
            )
        print(f"Lone lead on an idle HubSpot destination, {args.lone} times: commit -> CRM call")
        for r in await lone_leads(workdir, args.lone):
            print(f"  {r['mode']:<15} p50 {r['p50_ms']:.1f} ms  max {r['max_ms']:.1f} ms")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=5000, help="leads per burst")
    parser.add_argument(
        "--cap", type=float, default=120.0, help="stop a burst after this many seconds (estimate)"
    )
    parser.add_argument("--lone", type=int, default=40, help="lone leads per mode")
    sys.exit(asyncio.run(main(parser.parse_args())))
