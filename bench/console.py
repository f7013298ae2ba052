"""Console benchmark: every operator query on 100k leads and 300k deliveries.

    python bench/console.py                       # 100k leads, 300k deliveries, 7 runs each
    python bench/console.py --leads 2000 --runs 3 # a quick smoke run

Seeds a fresh SQLite store (on /var/tmp, through the store's own migrations and
search key) with N leads, three destinations each (3N deliveries: mostly
delivered over the last 7 days, some pending, retrying, dead with several error
classes, skipped) and an attempt row per finished or failed delivery, plus
unmapped keys and audit entries. Then it times each function the console pages,
the admin API and the CLI call (bridge/operations), median of ``--runs`` after
one warm-up, and prints milliseconds with the target (200 ms per page).

A page may call several functions (the overview page is ``overview``; the leads
page is one ``search``; the timeline page is ``timeline``; the dead-letter page
is ``dead letters`` + ``preview``); the "page" lines add them up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.config_load import validate_config
from bridge.destinations import Runtime, build_destinations
from bridge.metrics import Metrics
from bridge.operations.audit import list_audit, record
from bridge.operations.dead_letters import (
    DeadLetterQuery,
    list_dead_letters,
    preview_replay,
)
from bridge.operations.drift import drift_keys, flush_drift
from bridge.operations.overview import overview, unrouted_leads
from bridge.operations.search import LeadQuery, search_leads
from bridge.operations.timeline import lead_timeline
from bridge.store.search import SearchHasher
from bridge.store.sqlite import SQLiteStore

TARGET_MS = 200.0
DESTINATIONS = ("salesforce", "hubspot", "slack")
ERRORS = [
    ("HTTP 400: REQUIRED_FIELD_MISSING: LastName", 400),
    ("check the credentials of destination salesforce: HTTP 401: INVALID_SESSION_ID", 401),
    ("gave up after 6 attempts; last error: HTTP 503: Service Unavailable", 503),
    ("gave up after 6 attempts; last error: webhook request timed out (TimeoutError)", None),
    ("mapping error: LastName: required but empty", None),
]


def runtime(db: Path) -> Runtime:
    out = str(db.parent / "out.jsonl")
    config = validate_config(
        {
            "storage": {"url": f"sqlite:///{db}"},
            "destinations": [
                {
                    "name": name,
                    "type": "jsonl",
                    "settings": {"path": out},
                    "mapping": {"Email": "data.email", "LastName": "data.last_name"},
                }
                for name in DESTINATIONS
            ],
        }
    )
    dests, _ = build_destinations(config)
    return Runtime(config, dests, [])


def seed(db: Path, hasher: SearchHasher, leads: int, now: float, rng: random.Random) -> None:
    """Rows as intake and the engine leave them, written directly (fast)."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    lead_rows, delivery_rows, attempt_rows = [], [], []
    did = 0
    for i in range(leads):
        lid = f"led_{i:08d}"
        received = now - 7 * 86400 * (1 - i / leads)  # oldest first, up to now
        email, phone = f"person{i}@example{i % 97}.com", f"+1 555 {i:07d}"
        payload = json.dumps(
            {
                "id": lid,
                "url": "https://example.com/form",
                "created": "2026-11-30T12:00:00Z",
                "data": {
                    "first_name": "Pat",
                    "last_name": f"Person {i}",
                    "email": email,
                    "phone": phone,
                    "organization_name": "Org",
                    "budget": "10k",
                },
            }
        )
        lead_rows.append(
            (
                lid,
                received,
                "2026-11-30T12:00:00Z",
                None,
                payload,
                hasher.email(email),
                hasher.phone(phone),
            )
        )
        for dest in DESTINATIONS:
            did += 1
            roll = rng.random()
            finished = received + rng.uniform(0.05, 30)
            if received > now - 600 and roll < 0.5:
                status, attempts, err, code, nxt = "pending", 0, None, None, received
            elif roll < 0.02:
                err, code = rng.choice(ERRORS)
                status, attempts, nxt = "dead", 6, None
            elif roll < 0.03:
                status, attempts, err, code = "pending", 2, "HTTP 503: Service Unavailable", 503
                nxt = now + 300
            elif roll < 0.05 and dest == "slack":
                status, attempts, err, code, nxt = "skipped", 0, "when: did not match", None, None
            else:
                status, attempts, err, code, nxt = "delivered", 1, None, 201, None
            delivered_at = finished if status == "delivered" else None
            updated = finished if status != "pending" or attempts else received
            delivery_rows.append(
                (
                    did,
                    lid,
                    dest,
                    status,
                    attempts,
                    received,
                    nxt,
                    None,
                    err,
                    code,
                    f"r{did}" if delivered_at else None,
                    delivered_at,
                    updated,
                )
            )
            if status != "pending" or attempts:
                outcome = {"delivered": "delivered", "dead": "dead", "skipped": "skipped"}.get(
                    status, "retry"
                )
                attempt_rows.append(
                    (
                        did,
                        lid,
                        dest,
                        max(1, attempts),
                        finished - 0.1,
                        0.1,
                        outcome,
                        err,
                        code,
                        None,
                    )
                )
    conn.executemany(
        "INSERT INTO leads (id, received_at, created, url, payload, email_hash, phone_hash) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        lead_rows,
    )
    conn.executemany(
        "INSERT INTO deliveries (id, lead_id, destination, status, attempts, created_at, "
        "next_attempt_at, lease_token, last_error, last_status_code, remote_id, delivered_at, "
        "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        delivery_rows,
    )
    conn.executemany(
        "INSERT INTO attempts (delivery_id, lead_id, destination, number, started_at, duration, "
        "outcome, error, status_code, remote_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        attempt_rows,
    )
    conn.execute("COMMIT")
    # No ANALYZE: a deployed database has no statistics either.
    conn.close()


async def timed(fn: Callable[[], Awaitable[Any]], runs: int) -> float:
    await fn()  # warm-up: caches, statement preparation
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    parser.add_argument("--keep", action="store_true", help="keep the database")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lb-console-bench-", dir=args.dir))
    db = work / "console.db"
    rt = runtime(db)
    now = time.time()
    rng = random.Random(7)
    try:
        store = SQLiteStore(f"sqlite:///{db}", synchronous="NORMAL")
        await store.open()  # migrations and the search key
        assert store.search is not None
        hasher = store.search
        await store.close()
        t0 = time.perf_counter()
        seed(db, hasher, args.leads, now, rng)
        seeded = time.perf_counter() - t0

        store = SQLiteStore(f"sqlite:///{db}", synchronous="NORMAL")
        await store.open()
        try:
            metrics = Metrics()
            for key in ("budget", "utm_campaign", "gclid"):
                for dest in DESTINATIONS:
                    metrics.unmapped(dest, [key])
            await flush_drift(store, metrics)
            for i in range(200):
                await record(store, "bench", "replay", f"led_{i:08d}", {"requeued": 1})
            ((deliveries,),) = await store.fetch("SELECT count(*) FROM deliveries")
            ((dead,),) = await store.fetch("SELECT count(*) FROM deliveries WHERE status='dead'")
            print(
                f"seeded {args.leads:,} leads, {deliveries:,} deliveries ({dead:,} dead) "
                f"in {seeded:.1f} s; median of {args.runs} runs after a warm-up\n"
            )
            mid = args.leads // 2
            first = await search_leads(store, LeadQuery(), limit=50)
            dead_one = (await list_dead_letters(store, DeadLetterQuery(), limit=1)).items[0]
            cases: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
                ("overview (page)", lambda: overview(store, rt)),
                ("unrouted leads", lambda: unrouted_leads(store)),
                ("drift", lambda: drift_keys(store, rt)),
                ("search: newest 50 (leads page)", lambda: search_leads(store, LeadQuery())),
                (
                    "search: page 2 by cursor",
                    lambda: search_leads(store, LeadQuery(), cursor=first.next_cursor),
                ),
                (
                    "search: by email",
                    lambda: search_leads(
                        store, LeadQuery(email=f"person{mid}@example{mid % 97}.com")
                    ),
                ),
                (
                    "search: by phone",
                    lambda: search_leads(store, LeadQuery(phone=f"1555{mid:07d}")),
                ),
                (
                    "search: lead id",
                    lambda: search_leads(store, LeadQuery(lead_id=f"led_{mid:08d}")),
                ),
                ("search: status dead", lambda: search_leads(store, LeadQuery(status="dead"))),
                (
                    "search: retrying at one destination",
                    lambda: search_leads(
                        store, LeadQuery(status="retrying", destination="hubspot")
                    ),
                ),
                (
                    "search: received 2-3 days ago",
                    lambda: search_leads(
                        store,
                        LeadQuery(received_from=now - 3 * 86400, received_to=now - 2 * 86400),
                    ),
                ),
                (
                    "timeline (page)",
                    lambda: lead_timeline(store, rt, dead_one.delivery.lead_id),
                ),
                ("dead letters: all", lambda: list_dead_letters(store, DeadLetterQuery())),
                (
                    "dead letters: destination + class",
                    lambda: list_dead_letters(store, DeadLetterQuery("salesforce", "auth")),
                ),
                ("replay preview: all dead", lambda: preview_replay(store, DeadLetterQuery())),
                ("audit log", lambda: list_audit(store)),
            ]
            results: dict[str, float] = {}
            width = max(len(name) for name, _ in cases) + 2
            for name, fn in cases:
                results[name] = await timed(fn, args.runs)
                flag = "" if results[name] <= TARGET_MS else "   OVER TARGET"
                print(f"{name:<{width}} {results[name]:8.1f} ms{flag}")
            page = results["dead letters: all"] + results["replay preview: all dead"]
            print(f"\n{'dead-letter page (list + preview)':<{width}} {page:8.1f} ms")
            worst = max([*results.values(), page])
            print(f"{'slowest':<{width}} {worst:8.1f} ms (target {TARGET_MS:.0f} ms per page)")
            return 0 if worst <= TARGET_MS else 1
        finally:
            await store.close()
    finally:
        if args.keep:
            print(f"kept {db}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
