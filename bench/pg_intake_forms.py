"""Ways to write one intake group on PostgreSQL, measured back to back.

A group is what the writer commits at once: ``--requests`` webhook requests of
``--leads`` leads each, two destinations per lead. Each form writes the same
rows (leads with the tombstone check and ON CONFLICT, their deliveries, no
quarantine) in one transaction and learns which ids it inserted:

* ``unnest``   the store's statement (bridge/store/postgres_intake.py): one
               statement, arrays as binary parameters, CTEs for leads and deliveries;
* ``unnest_text`` the same statement with the arrays sent as text (``%s``), as
               before: psycopg quotes each element of a text array in Python;
* ``copy``     COPY into a temporary staging table (ON COMMIT DROP, so no session
               state survives: PgBouncer-safe), then one INSERT ... SELECT;
* ``pipeline`` psycopg pipeline mode: one INSERT per lead and per delivery,
               sent without waiting (one network round trip, many statements).

The forms alternate within each round, on fresh schemas, so a busy machine
slows them alike. Reported: median milliseconds per group, leads/s, and the
client's CPU per group (the service's event loop pays it).

    python bench/pg_intake_forms.py --storage-url postgresql://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg import sql

from bridge.store import postgres_intake
from bridge.store.base import LeadIn
from bridge.store.postgres import PostgresStore
from bridge.store.postgres_intake import GroupWriter, _IngestOp

DESTINATIONS = ["crm", "slack"]
PAYLOAD = '{"id": "%s", "email": "x%s@example.com", "phone": "+15550100", "name": "Bench Lead"}'


def leads_for(n: int) -> list[LeadIn]:
    ids = [uuid.uuid4().hex for _ in range(n)]
    return [LeadIn(i, PAYLOAD % (i, i), "2026-12-02T00:00:00Z", "https://x.test/f") for i in ids]


async def unnest_form(store: PostgresStore, groups: list[list[LeadIn]]) -> int:
    writer: GroupWriter = store._writer
    ops = [_IngestOp(g, DESTINATIONS, [], time.time()) for g in groups]
    await writer._insert(ops)
    return sum(len(op.result.accepted) for op in ops)


async def unnest_text_form(store: PostgresStore, groups: list[list[LeadIn]]) -> int:
    binary = postgres_intake.INSERT_GROUP
    postgres_intake.INSERT_GROUP = binary.replace("%b", "%s")
    try:
        return await unnest_form(store, groups)
    finally:
        postgres_intake.INSERT_GROUP = binary


async def copy_form(store: PostgresStore, groups: list[list[LeadIn]]) -> int:
    now = time.time()
    rows = sorted({lead.id: lead for g in groups for lead in g}.values())
    async with store._connection() as conn, conn.transaction():
        await conn.execute(
            "CREATE TEMP TABLE stage (id text, r float8, c text, u text, p text) ON COMMIT DROP"
        )
        async with conn.cursor().copy("COPY stage (id, r, c, u, p) FROM STDIN") as copy:
            for lead in rows:
                await copy.write_row((lead.id, now, lead.created, lead.url, lead.payload))
        cur = await conn.execute(
            "WITH l AS (INSERT INTO leads (id, received_at, created, url, payload) "
            "SELECT id, r, c, u, p FROM stage s WHERE NOT EXISTS "
            "(SELECT 1 FROM erased_leads t WHERE t.id = s.id) ORDER BY id "
            "ON CONFLICT (id) DO NOTHING RETURNING id), "
            "d AS (INSERT INTO deliveries (lead_id, destination, status, created_at, "
            "next_attempt_at, updated_at) SELECT l.id, d, 'pending', %s, %s, %s "
            "FROM l, unnest(%s::text[]) AS d) SELECT id FROM l",
            (now, now, now, DESTINATIONS),
        )
        return len(await cur.fetchall())


async def pipeline_form(store: PostgresStore, groups: list[list[LeadIn]]) -> int:
    now = time.time()
    rows = sorted({lead.id: lead for g in groups for lead in g}.values())
    accepted = 0
    async with store._connection() as conn, conn.transaction():
        async with conn.pipeline():
            curs = []
            for lead in rows:
                cur = conn.cursor()
                await cur.execute(
                    "INSERT INTO leads (id, received_at, created, url, payload) "
                    "SELECT %s, %s, %s, %s, %s WHERE NOT EXISTS "
                    "(SELECT 1 FROM erased_leads WHERE id = %s) "
                    "ON CONFLICT (id) DO NOTHING RETURNING id",
                    (lead.id, now, lead.created, lead.url, lead.payload, lead.id),
                )
                curs.append(cur)
                for dest in DESTINATIONS:
                    await conn.execute(
                        "INSERT INTO deliveries (lead_id, destination, status, created_at, "
                        "next_attempt_at, updated_at) SELECT id, %s, 'pending', %s, %s, %s "
                        "FROM leads WHERE id = %s AND received_at = %s",
                        (dest, now, now, now, lead.id, now),
                    )
        for cur in curs:
            accepted += len(await cur.fetchall())
    return accepted


FORMS: dict[str, Callable[[PostgresStore, list[list[LeadIn]]], Awaitable[int]]] = {
    "unnest": unnest_form,
    "unnest_text": unnest_text_form,
    "copy": copy_form,
    "pipeline": pipeline_form,
}


async def measure(url: str, requests: int, leads: int, groups: int, rounds: int) -> None:
    times: dict[str, list[float]] = {name: [] for name in FORMS}
    cpu: dict[str, list[float]] = {name: [] for name in FORMS}
    for rnd in range(rounds):
        for name, form in FORMS.items():
            schema = f"lb_bench_{uuid.uuid4().hex[:10]}"
            store = PostgresStore(url, schema=schema, pool_size=2)
            await store.open()
            try:
                batches = [[leads_for(leads) for _ in range(requests)] for _ in range(groups)]
                t0, c0 = time.perf_counter(), time.process_time()
                for batch in batches:
                    got = await form(store, batch)
                    if got != requests * leads:
                        raise SystemExit(f"{name}: inserted {got}, expected {requests * leads}")
                times[name].append((time.perf_counter() - t0) / groups)
                cpu[name].append((time.process_time() - c0) / groups)
            finally:
                await store.close()
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        print(f"round {rnd + 1}/{rounds} done", flush=True)
    size = requests * leads
    print(f"group: {requests} requests x {leads} leads = {size} leads, 2 deliveries each")
    base = statistics.median(times["unnest"])
    for name, values in times.items():
        med = statistics.median(values)
        print(
            f"{name:11s} {med * 1000:8.2f} ms/group  {size / med:9.0f} leads/s  "
            f"client CPU {statistics.median(cpu[name]) * 1000:6.2f} ms/group  "
            f"x{base / med:.2f} of unnest  (rounds: "
            + ", ".join(f"{v * 1000:.1f}" for v in values)
            + ")"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--storage-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--requests", type=int, default=64, help="requests per group")
    parser.add_argument("--leads", type=int, default=10, help="leads per request")
    parser.add_argument("--groups", type=int, default=50, help="groups per form and round")
    parser.add_argument("--rounds", type=int, default=3)
    args: Any = parser.parse_args(argv)
    asyncio.run(measure(args.storage_url, args.requests, args.leads, args.groups, args.rounds))


if __name__ == "__main__":
    main()
