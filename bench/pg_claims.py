"""Claim and intake cost on PostgreSQL at a small and a large table, back to back.

Two schemas are filled in the database (SQL generate_series, not the service):
``--small`` and ``--large`` leads, each with a pending, due delivery to ``crm``
and ``--history`` times as many delivered rows (the bulk of a real table). Then
rounds alternate between the two schemas:

* claim: ``store.claim`` of ``--batch`` deliveries (the worker's default 256)
  and one batched ``finish`` that schedules them again (a retry, due at once, so
  the number of pending and due rows stays the same through the run: the
  claimed rows go to the back of the queue);
* intake: one group of 64 requests x 10 leads through the store's writer
  statement (bridge/store/postgres_intake.py).

Reported: median and p95 milliseconds of each at each size, and large/small.
The issue's target is claim cost within 20 % from 1k to 1M pending.

    python bench/pg_claims.py --storage-url postgresql://postgres@127.0.0.1/test
    python bench/pg_claims.py --large 20000 --rounds 20      # a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from typing import Any

import psycopg
from psycopg import sql

from bridge.store.base import LeadIn, Outcome
from bridge.store.postgres import PostgresStore
from bridge.store.postgres_intake import _IngestOp

PAYLOAD = '{"email": "someone@example.com", "phone": "+15550100", "first_name": "Bench"}'


async def filled(url: str, leads: int, history: int) -> PostgresStore:
    store = PostgresStore(url, schema=f"lb_bench_{uuid.uuid4().hex[:10]}", pool_size=4)
    await store.open()
    t0 = time.perf_counter()
    await store.execute(
        [
            (
                "INSERT INTO leads (id, received_at, payload) "
                "SELECT 'lead-' || i, 0, ? FROM generate_series(1, ?::int) AS i",
                [PAYLOAD, leads * (1 + history)],
            ),
            (
                "INSERT INTO deliveries (lead_id, destination, status, created_at, "
                "next_attempt_at, updated_at) SELECT 'lead-' || i, 'crm', 'pending', 0, i, 0 "
                "FROM generate_series(1, ?::int) AS i",
                [leads],
            ),
            (
                "INSERT INTO deliveries (lead_id, destination, status, created_at, "
                "next_attempt_at, delivered_at, updated_at) SELECT 'lead-' || i, 'crm', "
                "'delivered', 0, NULL, 1, 1 FROM generate_series(?::int, ?::int) AS i",
                [leads + 1, leads * (1 + history)],
            ),
        ]
    )
    async with store._connection() as conn:
        await conn.execute("VACUUM ANALYZE leads")
        await conn.execute("VACUUM ANALYZE deliveries")
    print(
        f"filled {leads:,} pending (+{leads * history:,} delivered) in "
        f"{time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    return store


async def claim_round(store: PostgresStore, batch: int) -> float:
    now = time.time()
    t0 = time.perf_counter()
    claims = await store.claim(destination="crm", limit=batch, lease_seconds=60, now=now)
    await store.finish(
        [
            Outcome(c.delivery_id, c.lease_token, "pending", "retry", now, 0.01, now, "HTTP 503")
            for c in claims
        ]
    )
    elapsed = time.perf_counter() - t0
    if len(claims) != batch:
        raise SystemExit(f"claimed {len(claims)}, expected {batch}: raise --small")
    return elapsed


async def intake_round(store: PostgresStore) -> float:
    ops = [
        _IngestOp(
            [LeadIn(uuid.uuid4().hex, PAYLOAD) for _ in range(10)],
            ["crm"],
            [],
            time.time(),
        )
        for _ in range(64)
    ]
    t0 = time.perf_counter()
    await store._writer._insert(ops)
    return time.perf_counter() - t0


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return f"median {statistics.median(values) * 1000:7.2f} ms  p95 {p95 * 1000:7.2f} ms"


async def measure(args: Any) -> None:
    stores = {
        "small": await filled(args.storage_url, args.small, args.history),
        "large": await filled(args.storage_url, args.large, args.history),
    }
    claims: dict[str, list[float]] = {name: [] for name in stores}
    intake: dict[str, list[float]] = {name: [] for name in stores}
    try:
        for _ in range(args.rounds):
            for name, store in stores.items():
                claims[name].append(await claim_round(store, args.batch))
                intake[name].append(await intake_round(store))
        for name in stores:
            size = args.small if name == "small" else args.large
            print(
                f"{name} ({size:,} pending): claim+finish of {args.batch}: "
                f"{summary(claims[name])}; intake group of 640 leads: {summary(intake[name])}"
            )
        for label, found in (("claim+finish", claims), ("intake", intake)):
            ratio = statistics.median(found["large"]) / statistics.median(found["small"])
            print(f"{label}: large/small = {ratio:.2f}")
    finally:
        for store in stores.values():
            schema = store.schema
            await store.close()
            with psycopg.connect(args.storage_url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--storage-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--small", type=int, default=1_000, help="pending deliveries, small")
    parser.add_argument("--large", type=int, default=1_000_000, help="pending deliveries, large")
    parser.add_argument("--history", type=int, default=2, help="delivered rows per pending")
    parser.add_argument("--batch", type=int, default=256, help="deliveries per claim")
    parser.add_argument("--rounds", type=int, default=100)
    asyncio.run(measure(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
