"""1, 2, 3 ... replicas on one PostgreSQL: total intake, then total drain.

For each replica count N, on a fresh schema:

* intake: N ``lead-bridge serve`` processes (plain HTTP, workers off, one
  ``webhook`` destination) and N wrk processes posting 10-lead bodies at
  ``--connections / N`` each for ``--seconds``; reported: total requests/s and
  leads/s (the sum over the replicas), p50/p99 of the slowest replica;
* drain: the serves stop, N ``lead-bridge worker`` processes start against
  bench/sink.py (200 to everything) and empty the backlog the intake phase left;
  reported: deliveries/s from the workers' start to the last pending row gone.

On a 2-vCPU box the database, wrk, the sink and the replicas share the same two
cores, so more replicas cannot scale linearly; the figures show what they add
there. Needs wrk (apt-get install wrk).

    python bench/pg_replicas.py --storage-url postgresql://postgres@127.0.0.1:5432/test
    python bench/pg_replicas.py --replicas 1 2 --seconds 3          # a smoke run
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import yaml
from common import HERE, SECRET, Proc, free_port, run_wrk
from drain import CONCURRENCY, WEBHOOK_SECRET, Sink
from psycopg import sql


def write_config(
    work: Path, url: str, sink_url: str, port: int, name: str, concurrency: int = CONCURRENCY
) -> Path:
    tree: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port, "access_log": False, "behind_proxy": True},
        "auth": {"header_secrets": [SECRET]},
        "storage": {"url": url},
        "worker": {"enabled": False},
        "logging": {"level": "WARNING"},
        "destinations": [
            {
                "name": "sink",
                "type": "webhook",
                "settings": {
                    "url": f"{sink_url}/hook",
                    "secret": WEBHOOK_SECRET,
                    "allow_private": True,
                },
                "flow": {"concurrency": concurrency},
            }
        ],
    }
    path = work / name
    path.write_text(yaml.safe_dump(tree))
    return path


def cpu_seconds(pids: list[int] | None = None, comm: str | None = None) -> dict[int, float]:
    """User + system CPU of the given processes, or of every process named ``comm``."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[int, float] = {}
    for pid in pids if pids is not None else [int(p) for p in os.listdir("/proc") if p.isdigit()]:
        try:
            if comm is not None and Path(f"/proc/{pid}/comm").read_text().strip() != comm:
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        found[pid] = (int(fields[11]) + int(fields[12])) / tick
    return found


def postgres_cpu(url: str, before: dict[int, float]) -> float:
    """CPU used since ``before`` by PostgreSQL's processes, leaving out the backends
    of other databases (other sessions' tests share this server)."""
    with psycopg.connect(url) as conn:
        others = {
            r[0]
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname IS DISTINCT FROM current_database() "
                "AND backend_type = 'client backend'"
            ).fetchall()
        }
    after = cpu_seconds(comm="postgres")
    return sum(t - before.get(pid, 0.0) for pid, t in after.items() if pid not in others)


def pending(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM deliveries WHERE status = 'pending'").fetchone()
    return int(row[0]) if row else 0


def one_count(work: Path, base_url: str, sink: Sink, n: int, args: Any) -> dict[str, Any]:
    schema = f"lb_replicas_{uuid.uuid4().hex[:8]}"
    sep = "&" if "?" in base_url else "?"
    url = f"{base_url}{sep}options=-csearch_path%3D{schema}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    ports = [free_port() for _ in range(n)]
    configs = [
        write_config(work, url, sink.url, p, f"r{n}-{i}.yaml", args.concurrency)
        for i, p in enumerate(ports)
    ]
    py = sys.executable
    try:
        serves = [
            Proc([py, "-m", "bridge", "serve", "--config", str(c)], work / f"serve-{c.stem}.log")
            for c in configs
        ]
        try:
            for proc, port in zip(serves, ports, strict=True):
                proc.wait_http(f"http://127.0.0.1:{port}/readyz", timeout=120)
            per = max(1, args.connections // n)
            with ThreadPoolExecutor(n) as pool:
                runs = list(
                    pool.map(
                        lambda i: run_wrk(
                            f"http://127.0.0.1:{ports[i]}/lead/webhook",
                            "wrk_leads.lua",
                            args.seconds,
                            per,
                            {"LEADS": "10", "SEED": str(i + 1)},
                        ),
                        range(n),
                    )
                )
        finally:
            for proc in serves:
                proc.stop()
        backlog = pending(url)
        sink.reset()
        workers = [
            Proc([py, "-m", "bridge", "worker", "--config", str(c)], work / f"worker-{c.stem}.log")
            for c in configs
        ]
        try:
            pg_before = cpu_seconds(comm="postgres")
            start = time.monotonic()
            deadline = start + 120 + backlog / 100
            while (left := pending(url)) > 0:
                if time.monotonic() > deadline or any(w.proc.poll() is not None for w in workers):
                    raise RuntimeError(f"drain stalled with {left} pending; logs in {work}")
                time.sleep(0.05)
            end = time.monotonic()
            drained = end - start
            worker_cpu = sum(cpu_seconds([w.proc.pid for w in workers]).values())
            pg_cpu = postgres_cpu(url, pg_before)
        finally:
            for proc in workers:
                proc.stop()
        stats = sink.stats()
        # From the sink's first request to the last pending row gone, as bench/drain.py
        # times it: process start-up and migrations left out (one monotonic clock
        # for the whole machine, so the sink's timestamp compares with ours).
        window = end - stats["first"] if stats["requests"] else 0.0
    finally:
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    errors = sum(int(r["errors"]) for r in runs)  # non-2xx answers included
    return {
        "replicas": n,
        "rps": sum(r["rps"] for r in runs),
        "leads_per_s": sum(r["rps"] for r in runs) * 10,
        "p50_ms": max(r.get("p50_us", 0) for r in runs) / 1000,
        "p99_ms": max(r.get("p99_us", 0) for r in runs) / 1000,
        "http_errors": errors,
        "backlog": backlog,
        "drain_s": drained,
        "deliveries_per_s": backlog / drained if drained else 0.0,
        "window_s": window,
        # CPU per delivery (ms): the workers (start-up included) and the database
        "worker_cpu_ms": 1000 * worker_cpu / backlog if backlog else 0.0,
        "postgres_cpu_ms": 1000 * pg_cpu / backlog if backlog else 0.0,
        "window_per_s": backlog / window if window else 0.0,
        "sink_requests": stats["requests"],
        "sink_unique": stats["unique"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--storage-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64, help="in total")
    parser.add_argument(
        "--concurrency", type=int, default=CONCURRENCY, help="the sink destination's, per replica"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="lb-replicas-", dir="/var/tmp"))
    sink = Sink(work)
    try:
        for n in args.replicas:
            r = one_count(work, args.storage_url, sink, n, args)
            print(
                f"{n} replica(s): intake {r['rps']:,.0f} req/s = {r['leads_per_s']:,.0f} leads/s "
                f"(p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, errors "
                f"{r['http_errors']}); drain {r['backlog']:,} deliveries in {r['drain_s']:.1f} s "
                f"= {r['deliveries_per_s']:,.0f}/s with start-up, {r['window_per_s']:,.0f}/s from the "
                f"first to the last delivery (sink: {r['sink_requests']:,} requests, "
                f"{r['sink_unique']:,} distinct); CPU per delivery: workers "
                f"{r['worker_cpu_ms']:.3f} ms, PostgreSQL {r['postgres_cpu_ms']:.3f} ms",
                flush=True,
            )
    finally:
        sink.proc.stop()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
