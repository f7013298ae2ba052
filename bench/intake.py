"""Intake benchmark: `lead-bridge serve` against the ceiling of a Python receiver.

    python bench/intake.py                      # SQLite, HTTPS, 2 rounds of 10 s each
    python bench/intake.py --storage-url postgresql://postgres@127.0.0.1:5432/test

Both servers run on the same uvicorn settings (TLS, uvloop, httptools, one
process); the ceiling (bench/ceiling.py) only parses the JSON and answers 200.
wrk (apt-get install wrk) posts bodies of 1 and 10 leads with unique ids at
concurrency 64. The rounds alternate ceiling / service so that noise on this
shared machine hits both; the report gives each figure as a ratio to the
ceiling measured in the same round. Nothing here is a test: CI times nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from common import HERE, SECRET, Proc, free_port, run_wrk


def wrk_leads(url: str, leads: int, seconds: int, connections: int) -> dict[str, Any]:
    result = run_wrk(url, "wrk_leads.lua", seconds, connections, {"LEADS": str(leads)})
    result["leads_per_s"] = result["rps"] * leads
    return result


def make_cert(work: Path) -> tuple[Path, Path]:
    from bridge.tls import make_self_signed

    cert, key = work / "cert.pem", work / "key.pem"
    make_self_signed(cert, key, hostnames=["localhost"])
    return cert, key


def service_config(work: Path, port: int, cert: Path, key: Path, storage_url: str | None) -> Path:
    tree = {
        "server": {
            "host": "127.0.0.1",
            "port": port,
            "tls": {"certfile": str(cert), "keyfile": str(key)},
            "access_log": os.environ.get("BENCH_ACCESS_LOG", "1") == "1",
        },
        "auth": {"header_secrets": [SECRET]},
        "storage": {
            "url": storage_url or f"sqlite:///{work / 'bench.db'}",
            "synchronous": os.environ.get("BENCH_SYNCHRONOUS", "FULL"),
        },
        # A destination, so intake writes its outbox row too; workers off: intake only.
        "worker": {"enabled": False},
        "logging": {"level": "INFO"},
        "destinations": [
            {
                "name": "sink",
                "type": "webhook",
                "settings": {"url": "http://127.0.0.1:9/none", "allow_private": True},
            }
        ],
    }
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def disk_check(work: Path, seconds: float = 3.0) -> dict[str, float]:
    """The disk's own fsync latency, measured in the same run: a durable commit
    cannot be faster, and its stalls show up in the service's p99 (the ceiling
    writes nothing)."""
    path = work / "fsync-check"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    times: list[float] = []
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            os.write(fd, b"x" * 16384)
            started = time.perf_counter()
            os.fdatasync(fd)
            times.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink()
    times.sort()
    return {
        "fsyncs": len(times),
        "p50_ms": times[len(times) // 2] * 1000,
        "p99_ms": times[int(len(times) * 0.99)] * 1000,
        "max_ms": times[-1] * 1000,
        "stalls_over_20ms": sum(t > 0.02 for t in times),
    }


def reset_postgres(url: str) -> None:
    """Start each PostgreSQL run from empty tables (they exist after the first run)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass('leads') IS NOT NULL").fetchone()
        if exists and exists[0]:
            conn.execute("TRUNCATE attempts, deliveries, quarantine, leads CASCADE")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--storage-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="lb-bench-", dir="/var/tmp"))
    cert, key = make_cert(work)
    disk = disk_check(work)
    print(
        f"disk: {disk['fsyncs']} fsyncs of 16 KiB in 3 s, p50 {disk['p50_ms']:.2f} ms, "
        f"p99 {disk['p99_ms']:.2f} ms, max {disk['max_ms']:.1f} ms, "
        f"{disk['stalls_over_20ms']} over 20 ms",
        flush=True,
    )
    results: dict[str, list[dict[str, Any]]] = {}
    py = sys.executable
    try:
        for rnd in range(args.rounds):
            for leads in (1, 10):
                port = free_port()
                ceiling = Proc(
                    [
                        py,
                        str(HERE / "ceiling.py"),
                        "--port",
                        str(port),
                        "--certfile",
                        str(cert),
                        "--keyfile",
                        str(key),
                    ],
                    work / "ceiling.log",
                    cwd=work,
                )
                ceiling.wait_http(f"https://127.0.0.1:{port}/lead/webhook")
                base = wrk_leads(
                    f"https://127.0.0.1:{port}/lead/webhook", leads, args.seconds, args.connections
                )
                ceiling.stop()

                port = free_port()
                db = work / "bench.db"
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{db}{suffix}").unlink(missing_ok=True)
                if args.storage_url:
                    reset_postgres(args.storage_url)
                config = service_config(work, port, cert, key, args.storage_url)
                service = Proc(
                    [
                        py,
                        "-m",
                        "bridge",
                        "serve",
                        "--config",
                        str(config),  # logging at INFO: one line per request, as in production
                    ],
                    work / "service.log",
                    cwd=work,
                )
                service.wait_http(f"https://127.0.0.1:{port}/healthz")
                svc = wrk_leads(
                    f"https://127.0.0.1:{port}/lead/webhook", leads, args.seconds, args.connections
                )
                service.stop()
                row = {
                    "round": rnd + 1,
                    "leads_per_post": leads,
                    "ceiling": base,
                    "service": svc,
                    "ratio": svc["rps"] / base["rps"],
                }
                results.setdefault(str(leads), []).append(row)
                print(
                    f"round {rnd + 1} {leads:>2}-lead: ceiling {base['rps']:7.0f} req/s "
                    f"p99 {base['p99_us'] / 1000:5.1f} ms | service {svc['rps']:7.0f} req/s "
                    f"({svc['leads_per_s']:7.0f} leads/s) p50 {svc['p50_us'] / 1000:5.1f} ms "
                    f"p99 {svc['p99_us'] / 1000:5.1f} ms errors {svc['errors']} | ratio {row['ratio']:.2f}",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print()
    print("summary (median over rounds; ratio = service req/s / ceiling req/s in the same round)")
    summary = {}
    for leads, rows in results.items():
        med = {
            "ratio": statistics.median(r["ratio"] for r in rows),
            "service_rps": statistics.median(r["service"]["rps"] for r in rows),
            "service_leads_per_s": statistics.median(r["service"]["leads_per_s"] for r in rows),
            "ceiling_rps": statistics.median(r["ceiling"]["rps"] for r in rows),
            "p50_ms": statistics.median(r["service"]["p50_us"] for r in rows) / 1000,
            "p99_ms": statistics.median(r["service"]["p99_us"] for r in rows) / 1000,
            "errors": sum(r["service"]["errors"] for r in rows),
        }
        summary[leads] = med
        print(
            f"  {leads:>2}-lead posts: {med['ratio']:.2f}x ceiling, {med['service_rps']:.0f} req/s, "
            f"{med['service_leads_per_s']:.0f} leads/s, p50 {med['p50_ms']:.1f} ms, "
            f"p99 {med['p99_ms']:.1f} ms (ceiling {med['ceiling_rps']:.0f} req/s), errors {med['errors']}"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"summary": summary, "disk": disk, "rounds": results}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
