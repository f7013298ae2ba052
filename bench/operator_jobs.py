"""Webhook latency behind long operator jobs (issue 12, defect 9).

    python bench/operator_jobs.py                          # 200k leads, every job
    python bench/operator_jobs.py --leads 5000 --jobs replay --idle-posts 50   # a smoke run

A fresh SQLite store on /var/tmp (real fsyncs, ``synchronous=FULL``) is filled
with N leads through the store's own intake path, then shaped for the job:

* ``replay``: every delivery dead; `lead-bridge replay --dead --yes` in its own
  process, so with its own SQLite writer process competing with the service's
  for the database lock;
* ``purge``: every delivery delivered and every lead older than
  ``retention.payload_days``; the service's own retention task purges at start-up;
* ``erase``: one lead holds a unique address; `lead-bridge erase --email ... --yes`
  in its own process (it scans every payload, then removes one lead).

For each job `lead-bridge serve` (plain HTTP behind_proxy, no destinations, so
no delivery work) answers paced 1-lead webhooks (one at a time, every
``--interval-ms``) twice: idle, then while the job runs. The report gives the
webhook latency (p50 / p99 / max) idle and during the job, and how long the job
took. Target: a webhook never waits more than ~100 ms behind a job (max during
the job minus the idle p99).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from common import ROOT, Proc, free_port

DAY = 86400.0
ERASE_ADDRESS = "erase.me.bench@example.com"
LEAD_DATA = {
    "first_name": "John",
    "last_name": "Doe",
    "phone": "+123123123123123",
    "email": "john.doe@example.com",
    "organization_name": "Org",
    "interested_in": "I would like information for my department",
}


# ---------------------------------------------------------------------- the store


async def _fill(db: Path, n: int) -> None:
    from bridge.store.base import LeadIn
    from bridge.store.sqlite import SQLiteStore

    # Through the store's own intake path; synchronous=OFF because filling is not measured.
    store = SQLiteStore(f"sqlite:///{db}", synchronous="OFF")
    await store.open()
    try:
        now = time.time() - 1
        for start in range(0, n, 5000):
            leads = []
            for i in range(start, min(n, start + 5000)):
                data = dict(LEAD_DATA, email=ERASE_ADDRESS) if i == n // 2 else LEAD_DATA
                payload = json.dumps({"id": f"led_job_{i}", "data": data}, separators=(",", ":"))
                leads.append(LeadIn(id=f"led_job_{i}", payload=payload))
            await store.ingest(leads, ["crm"], [], now)
    finally:
        await store.close()


def prepare(work: Path, n: int, job: str) -> Path:
    db = work / f"{job}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    asyncio.run(_fill(db, n))
    conn = sqlite3.connect(db, timeout=30)
    try:
        if job == "replay":
            conn.execute("UPDATE deliveries SET status = 'dead', attempts = 1")
        elif job == "purge":
            conn.execute("UPDATE deliveries SET status = 'delivered', delivered_at = updated_at")
            conn.execute("UPDATE leads SET received_at = received_at - 40 * 86400")
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return db


def write_config(work: Path, db: Path, port: int, job: str) -> Path:
    tree: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port, "behind_proxy": True},
        "storage": {"url": f"sqlite:///{db}", "synchronous": "FULL"},
        "logging": {"level": "INFO"},
        # The destination the stored deliveries name, disabled: no delivery work.
        "destinations": [
            {
                "name": "crm",
                "type": "jsonl",
                "enabled": False,
                "settings": {"path": str(work / "out.jsonl")},
            }
        ],
    }
    if job == "purge":
        tree["retention"] = {"payload_days": 30, "interval": "24h"}
    path = work / f"{job}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


# ---------------------------------------------------------------------- webhooks


async def post_paced(
    url: str, *, count: int | None, interval: float, until: Any = None, tag: str
) -> list[float]:
    """Latencies (ms) of 1-lead posts, one at a time, one every ``interval`` s:
    ``count`` of them, or until ``until()`` is true."""
    latencies: list[float] = []
    async with httpx.AsyncClient(timeout=120) as client:
        i = 0
        while (count is None or i < count) and not (until is not None and until()):
            body = json.dumps([{"id": f"led_hook_{tag}_{i}", "data": LEAD_DATA}])
            started = time.perf_counter()
            response = await client.post(
                url, content=body, headers={"content-type": "application/json"}
            )
            elapsed = time.perf_counter() - started
            if response.status_code != 200:
                raise RuntimeError(f"webhook answered {response.status_code}: {response.text}")
            latencies.append(elapsed * 1000)
            i += 1
            await asyncio.sleep(max(0.0, interval - elapsed))
    return latencies


def summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]

    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 1),
        "p99": round(pct(0.99), 1),
        "max": round(ordered[-1], 1),
    }


# ---------------------------------------------------------------------- one job


def job_command(job: str, config: Path) -> list[str] | None:
    bridge = [sys.executable, "-m", "bridge"]
    if job == "replay":
        usage = subprocess.run(
            [*bridge, "replay", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        confirm = ["--yes"] if "--yes" in usage else []  # asked since replay --dead previews
        return [*bridge, "replay", "--dead", *confirm, "--config", str(config)]
    if job == "erase":
        return [*bridge, "erase", "--email", ERASE_ADDRESS, "--yes", "--config", str(config)]
    return None  # purge: the service's retention task, at start-up


def run_job(work: Path, n: int, job: str, args: argparse.Namespace) -> dict[str, Any]:
    print(f"{job}: filling {n} leads ...", flush=True)
    db = prepare(work, n, job)
    port = free_port()
    url = f"http://127.0.0.1:{port}/lead/webhook"
    interval = args.interval_ms / 1000
    idle_config = write_config(work, db, port, "idle")
    serve = Proc(
        [sys.executable, "-m", "bridge", "serve", "--config", str(idle_config)],
        work / f"{job}-serve.log",
    )
    try:
        serve.wait_http(f"http://127.0.0.1:{port}/healthz")
        idle = asyncio.run(post_paced(url, count=args.idle_posts, interval=interval, tag="idle"))
        if job == "purge":  # the retention task purges at start-up: restart with it
            serve.stop()
            log = work / f"{job}-serve2.log"
            serve = Proc(
                [
                    sys.executable,
                    "-m",
                    "bridge",
                    "serve",
                    "--config",
                    str(write_config(work, db, port, job)),
                ],
                log,
            )
            started = time.monotonic()
            serve.wait_http(f"http://127.0.0.1:{port}/healthz")

            def finished() -> bool:
                return "event=retention_purge" in log.read_text(errors="replace")

            busy = asyncio.run(
                post_paced(url, count=None, interval=interval, until=finished, tag="job")
            )
            duration = time.monotonic() - started
        else:
            command = job_command(job, write_config(work, db, port, job))
            assert command is not None
            with (work / f"{job}-job.log").open("wb") as out:
                started = time.monotonic()
                proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
                busy = asyncio.run(
                    post_paced(
                        url,
                        count=None,
                        interval=interval,
                        until=lambda: proc.poll() is not None,
                        tag="job",
                    )
                )
                proc.wait()
                duration = time.monotonic() - started
            if proc.returncode != 0:
                raise RuntimeError(f"{job} exited with {proc.returncode}: see {work}")
    finally:
        serve.stop()
    result = {
        "job": job,
        "leads": n,
        "job_seconds": round(duration, 2),
        "idle": summary(idle),
        "during": summary(busy) if busy else None,
    }
    if busy:
        result["max_wait_behind_job_ms"] = round(max(busy) - summary(idle)["p99"], 1)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=200_000)
    parser.add_argument("--jobs", nargs="+", default=["replay", "purge", "erase"])
    parser.add_argument("--idle-posts", type=int, default=200)
    parser.add_argument("--interval-ms", type=float, default=20.0)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lb-bench-jobs-", dir="/var/tmp"))
    try:
        for job in args.jobs:
            result = run_job(work, args.leads, job, args)
            print(json.dumps(result), flush=True)
            idle, during = result["idle"], result["during"]
            if during is None:
                print(f"  {job}: finished before the first webhook", flush=True)
                continue
            print(
                f"  {job} of {args.leads} leads took {result['job_seconds']} s; webhooks "
                f"idle p50/p99/max {idle['p50']}/{idle['p99']}/{idle['max']} ms, during the "
                f"job ({during['n']}) {during['p50']}/{during['p99']}/{during['max']} ms",
                flush=True,
            )
    finally:
        if args.keep:
            print(f"work directory: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
