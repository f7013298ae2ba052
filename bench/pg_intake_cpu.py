"""Where intake's CPU goes on PostgreSQL: per request, per group, per lead.

    python bench/pg_intake_cpu.py --storage-url postgresql://postgres@127.0.0.1:5432/test
    python bench/pg_intake_cpu.py --rounds 1 --seconds 3            # a smoke run

Part 1, under wrk (bench/intake.py's settings: TLS, c=64, 1- and 10-lead
bodies), rounds alternating ceiling / SQLite / PostgreSQL: requests/s and the
CPU time per request of the server's process tree (the SQLite writer child
included) and of PostgreSQL's processes (backends of other databases left out:
other sessions' tests share the server). On two vCPUs the sum of these is what
bounds the rate; the ratio to the ceiling is only meaningful next to them.

Part 2, in this process: the fixed cost of one intake group (a one-request
group in a loop: pool checkout with its connection check, the one statement,
its answer) and what that statement costs alone on a held connection; then
the per-lead costs of parsing a body and of the search hashes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import HERE, Proc, free_port
from intake import make_cert, reset_postgres, service_config, wrk_leads
from pg_replicas import cpu_seconds, postgres_cpu

URL = "postgresql://postgres@127.0.0.1:5432/test"
LEAD = (
    '{"id":"led_%s","url":"https://some-site.com/page-with-lead-form/",'
    '"created":"2018-07-12T16:29:42Z","data":{"first_name":"John","last_name":"Doe",'
    '"phone":"+123123123123123","email":"john.doe@example.com","state":"Georgia",'
    '"interested_in":"I would like information for my department"}}'
)


def one_server(kind: str, leads: int, args: argparse.Namespace, work: Path) -> str:
    tls = (work / "cert.pem", work / "key.pem")
    port = free_port()
    if kind == "ceiling":
        command = [str(HERE / "ceiling.py"), "--port", str(port)]
        command += ["--certfile", str(tls[0]), "--keyfile", str(tls[1])]
        server = Proc([sys.executable, *command], work / "ceiling.log", cwd=work)
        server.wait_http(f"https://127.0.0.1:{port}/lead/webhook")
    else:
        url = args.storage_url if kind == "postgresql" else None
        if url:
            reset_postgres(url)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{work / 'bench.db'}{suffix}").unlink(missing_ok=True)
        config = service_config(work, port, tls, url, access_log=True)
        command = ["-m", "bridge", "serve", "--config", str(config)]
        server = Proc([sys.executable, *command], work / "service.log", cwd=work)
        server.wait_http(f"https://127.0.0.1:{port}/healthz")
    try:
        pg0 = cpu_seconds(comm="postgres")
        result = wrk_leads(
            f"https://127.0.0.1:{port}/lead/webhook",
            leads,
            args.seconds,
            args.connections,
            None,
            server,
        )
        pg = postgres_cpu(args.storage_url, pg0) if kind == "postgresql" else 0.0
    finally:
        server.stop()
    pg_ms = 1000 * pg / max(result["requests"], 1)
    return (
        f"{kind:>10} {leads:>2}-lead: {result['rps']:6,.0f} req/s, p50 "
        f"{result['p50_us'] / 1000:5.1f} ms | CPU per request: server {result['cpu_ms']:.3f} ms"
        + (f", PostgreSQL {pg_ms:.3f} ms" if pg else "")
    )


async def group_costs(url: str, n: int) -> None:
    from bridge.leads import parse_body
    from bridge.store.base import LeadIn
    from bridge.store.postgres import PostgresStore
    from bridge.store.postgres_intake import INSERT_GROUP
    from bridge.store.search import SearchHasher

    store = PostgresStore(url, schema="lb_bench_intake_cpu")
    await store.open()
    try:
        tag = os.urandom(4).hex()
        started = time.process_time()
        for i in range(n):
            await store.ingest([LeadIn(f"{tag}-{i}", '{"a":1}')], ["crm"], [], time.time())
        per_group = (time.process_time() - started) / n
        async with store._connection() as conn:
            started = time.process_time()
            for i in range(n):
                one = [f"{tag}+{i}"]
                leads = [one, [1.0], [None], [None], ['{"a":1}'], [None], [None]]
                deliveries = [one, ["crm"], [1.0]]
                quarantine: list[list[object]] = [[], [], [], [], []]
                # as the writer binds them: leads, deliveries, quarantine columns
                cur = await conn.execute(INSERT_GROUP, [*leads, *deliveries, *quarantine])
                await cur.fetchall()
            statement = (time.process_time() - started) / n
        started = time.process_time()
        for _ in range(n):
            async with store._connection():
                pass
        checkout = (time.process_time() - started) / n
    finally:
        await store.close()
    print(
        f"one-request group: {per_group * 1e6:.0f} us of client CPU; the statement alone "
        f"on a held connection {statement * 1e6:.0f} us; pool checkout (with its check) "
        f"{checkout * 1e6:.0f} us"
    )
    bodies = [
        ("[" + ",".join(LEAD % f"{b}x{i}" for i in range(10)) + "]").encode() for b in range(2000)
    ]
    hasher = SearchHasher(b"k" * 32)
    started = time.process_time()
    batches = [parse_body(body) for body in bodies]
    parse = (time.process_time() - started) / 20000
    started = time.process_time()
    for batch in batches:
        for lead in batch.leads:
            hasher.payload(lead.payload)
    rehash = (time.process_time() - started) / 20000
    started = time.process_time()
    for batch in batches:
        for element in batch.elements:
            hasher.lead(element)
    hashed = (time.process_time() - started) / 20000
    print(
        f"per lead: parse {parse * 1e6:.1f} us; search hashes {rehash * 1e6:.1f} us "
        f"(from the parsed element instead of the payload text: {hashed * 1e6:.1f} us)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--storage-url", default=URL)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--groups", type=int, default=1000, help="one-request groups timed")
    args = parser.parse_args()
    sep = "&" if "?" in args.storage_url else "?"
    args.storage_url = f"{args.storage_url}{sep}options=-csearch_path%3Dlb_bench_intake_cpu"
    work = Path(tempfile.mkdtemp(prefix="lb-pg-cpu-", dir="/var/tmp"))
    try:
        make_cert(work)
        for rnd in range(args.rounds):
            for leads in (1, 10):
                for kind in ("ceiling", "sqlite", "postgresql"):
                    print(f"round {rnd + 1} " + one_server(kind, leads, args, work), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    asyncio.run(group_costs(args.storage_url, args.groups))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    raise SystemExit(main())
