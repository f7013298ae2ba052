"""Drain benchmark: how fast `lead-bridge worker` empties a backlog of pending deliveries.

    python bench/drain.py                     # 2 rounds: drain 1k / 20k / 100k, intake p99
    python bench/drain.py --rounds 1 --skip-intake --sizes 20000

Each drain run builds a fresh SQLite store on /var/tmp (not tmpfs: fsyncs are
real) holding N pending deliveries for one ``webhook`` destination (signed,
concurrency 32) that points at bench/sink.py, a fast HTTP sink in its own
process. It then starts `lead-bridge worker` as a subprocess and times from
the sink's first request to the moment the store shows every delivery
``delivered`` (process start-up is left out, finish commits are in). The sink
must have seen every ``webhook-id`` exactly once.

Baseline, measured in each round: a raw aiohttp client posting the same signed
bodies to the same sink at the same concurrency, on the same event loop kind as
the worker (the ceiling of a Python sender). Figures are reported as ratios to
it, as these machines are shared and noisy, and as absolute rates.

Targets (issue 4): ≥ 2,000 deliveries/s at N=20,000; the drain rate at N=1,000
and N=100,000 within 20% of each other (the claim cost must not grow with the
backlog); intake p99 while the engine drains within 2x of idle.

The intake phase runs `lead-bridge serve` (TLS, workers in the same process)
and wrk (bench/wrk_paced.lua: 1-lead posts at a paced, moderate rate, so the
latency measured is the service's and not a saturated queue's) twice: once
with an empty backlog, once while the engine drains a large one.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from common import HERE, SECRET, Proc, free_port, run_wrk

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"bench-webhook-signing-key-0123").decode()
CONCURRENCY = 32
LEAD = {
    "url": "https://some-site.com/page-with-lead-form/",
    "created": "2018-07-12T16:29:42Z",
    "data": {
        "first_name": "John",
        "last_name": "Doe",
        "phone": "+123123123123123",
        "position": "Agent",
        "email": "john.doe@example.com",
        "state": "Georgia",
        "organization_name": "Org",
        "organization_size": "101-250",
        "organization_country": "United States",
        "interested_in": "I would like information for my department",
    },
}


class Sink:
    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = Proc(
            [sys.executable, str(HERE / "sink.py"), "--port", str(self.port)], work / "sink.log"
        )
        self.proc.wait_http(f"{self.url}/stats")

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(f"{self.url}/stats", timeout=5).json()
        return data

    def reset(self) -> None:
        httpx.post(f"{self.url}/reset", timeout=5)


# ---------------------------------------------------------------------- the store


def fresh_db(work: Path, name: str) -> Path:
    db = work / name
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    return db


def lead_payload(i: int, tag: str) -> str:
    return json.dumps({"id": f"led_{tag}_{i}", **LEAD}, separators=(",", ":"))


async def _prefill(db: Path, n: int, tag: str) -> None:
    from bridge.store.base import LeadIn
    from bridge.store.sqlite import SQLiteStore

    # Through the store's own intake path, so rows look exactly like received ones;
    # synchronous=OFF because filling is not what is measured.
    store = SQLiteStore(f"sqlite:///{db}", synchronous="OFF")
    await store.open()
    try:
        now = time.time() - 1
        for start in range(0, n, 5000):
            leads = [
                LeadIn(id=f"led_{tag}_{i}", payload=lead_payload(i, tag))
                for i in range(start, min(n, start + 5000))
            ]
            await store.ingest(leads, ["sink"], [], now)
    finally:
        await store.close()


def prefill(db: Path, n: int, tag: str) -> None:
    asyncio.run(_prefill(db, n, tag))


def counts(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return dict(conn.execute("SELECT status, count(*) FROM deliveries GROUP BY status"))
    finally:
        conn.close()


def pending(conn: sqlite3.Connection) -> int:
    # Uses the partial index on pending rows: cheap when the backlog is nearly gone.
    row = conn.execute("SELECT count(*) FROM deliveries WHERE status = 'pending'").fetchone()
    return int(row[0])


def write_config(
    work: Path, db: Path, sink_url: str, *, port: int = 0, cert: Path | None = None
) -> Path:
    tree: dict[str, Any] = {
        "auth": {"header_secrets": [SECRET]},
        "storage": {"url": f"sqlite:///{db}", "synchronous": "FULL"},
        "logging": {"level": "INFO"},  # one line per delivery, as in production
        "metrics": {"enabled": True},
        "destinations": [
            {
                "name": "sink",
                "type": "webhook",
                "settings": {
                    "url": f"{sink_url}/hook",
                    "secret": WEBHOOK_SECRET,
                    "allow_private": True,
                },
                "flow": {"concurrency": CONCURRENCY},
            }
        ],
    }
    if cert is not None:
        tree["server"] = {
            "host": "127.0.0.1",
            "port": port,
            "tls": {"certfile": str(cert), "keyfile": str(cert.with_name("key.pem"))},
        }
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


# ---------------------------------------------------------------------- drain runs


def drain(work: Path, sink: Sink, n: int, tag: str) -> dict[str, Any]:
    db = fresh_db(work, "drain.db")
    prefill(db, n, tag)
    sink.reset()
    config = write_config(work, db, sink.url)
    worker = Proc(
        [sys.executable, "-m", "bridge", "worker", "--config", str(config)], work / "worker.log"
    )
    conn = sqlite3.connect(db, timeout=30)
    try:
        deadline = time.monotonic() + 60 + n / 200
        while sink.stats()["requests"] < n:
            if worker.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker stopped or stalled; see {work / 'worker.log'}")
            time.sleep(0.05)
        while pending(conn) > 0:
            if time.monotonic() > deadline:
                raise RuntimeError("deliveries still pending")
            time.sleep(0.002)
        end = time.monotonic()
    finally:
        conn.close()
        worker.stop()
    stats = sink.stats()
    by_status = counts(db)
    ok = stats["unique"] == n and stats["requests"] == n and by_status == {"delivered": n}
    if not ok:
        raise RuntimeError(f"N={n}: sink {stats}, store {by_status}")
    seconds = end - stats["first"]
    return {"n": n, "seconds": seconds, "rate": n / seconds}


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


async def _baseline(url: str, n: int) -> float:
    import aiohttp

    from connectors.webhook import decode_secret

    key = decode_secret(WEBHOOK_SECRET)
    bodies = [lead_payload(i, "base").encode() for i in range(n)]
    queue = iter(range(n))
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def sender() -> None:
            for i in queue:
                msg_id = f"msg_base_{i}"
                ts = int(time.time())
                headers = {
                    "content-type": "application/json",
                    "webhook-id": msg_id,
                    "webhook-timestamp": str(ts),
                    "webhook-signature": sign(key, msg_id, ts, bodies[i]),
                }
                async with session.post(url, data=bodies[i], headers=headers) as resp:
                    await resp.read()
                    resp.raise_for_status()

        t0 = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(CONCURRENCY)))
        return n / (time.perf_counter() - t0)


def baseline(sink: Sink, n: int) -> float:
    sink.reset()
    rate = asyncio.run(_baseline(f"{sink.url}/hook", n))
    stats = sink.stats()
    if stats["unique"] != n:
        raise RuntimeError(f"baseline: sink saw {stats}")
    return rate


# ---------------------------------------------------------------------- intake p99


def wrk_paced(url: str, seconds: int, connections: int, delay_ms: int) -> dict[str, Any]:
    env = {
        "LEADS": "1",
        "DELAY_MS": str(delay_ms),
        "WRK_LEADS_LUA": str(HERE / "wrk_leads.lua"),
    }
    return run_wrk(url, "wrk_paced.lua", seconds, connections, env)


def intake_p99(work: Path, sink: Sink, backlog: int, args: argparse.Namespace) -> dict[str, Any]:
    from bridge.tls import make_self_signed

    cert = work / "cert.pem"
    if not cert.exists():
        make_self_signed(cert, work / "key.pem", hostnames=["localhost"])
    db = fresh_db(work, "serve.db")
    if backlog:
        prefill(db, backlog, "backlog")
    sink.reset()
    port = free_port()
    config = write_config(work, db, sink.url, port=port, cert=cert)
    serve = Proc(
        [sys.executable, "-m", "bridge", "serve", "--config", str(config)], work / "serve.log"
    )
    try:
        serve.wait_http(f"https://127.0.0.1:{port}/healthz")
        if backlog:
            while sink.stats()["requests"] < 2 * CONCURRENCY:  # the drain is under way
                time.sleep(0.05)
        before = sink.stats()["requests"]
        result = wrk_paced(
            f"https://127.0.0.1:{port}/lead/webhook",
            args.wrk_seconds,
            args.wrk_connections,
            args.wrk_delay_ms,
        )
        result["delivered_during"] = sink.stats()["requests"] - before
        conn = sqlite3.connect(db, timeout=30)
        try:
            result["pending_after"] = pending(conn)
        finally:
            conn.close()
    finally:
        serve.stop()
    if backlog and result["pending_after"] == 0:
        print("  warning: the backlog ran out during wrk; raise --intake-backlog", flush=True)
    return result


# ---------------------------------------------------------------------- report


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 20000, 100000])
    parser.add_argument(
        "--small-repeats", type=int, default=3, help="runs of N<=5000 per round (median)"
    )
    parser.add_argument("--baseline-n", type=int, default=20000)
    parser.add_argument("--skip-intake", action="store_true")
    parser.add_argument("--intake-backlog", type=int, default=60000)
    parser.add_argument("--wrk-seconds", type=int, default=10)
    parser.add_argument("--wrk-connections", type=int, default=8)
    parser.add_argument(
        "--wrk-delay-ms", type=int, default=16, help="pause per connection between posts"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if not args.skip_intake and shutil.which("wrk") is None:
        print(
            "wrk is needed for the intake phase: apt-get install wrk (or --skip-intake)",
            file=sys.stderr,
        )
        return 2

    work = Path(tempfile.mkdtemp(prefix="lb-drain-", dir="/var/tmp"))
    sink = Sink(work)
    rounds: list[dict[str, Any]] = []
    try:
        for rnd in range(1, args.rounds + 1):
            row: dict[str, Any] = {"round": rnd, "baseline": baseline(sink, args.baseline_n)}
            print(
                f"round {rnd}: baseline (raw aiohttp, c={CONCURRENCY}) {row['baseline']:7.0f}/s",
                flush=True,
            )
            for n in args.sizes:
                repeats = args.small_repeats if n <= 5000 else 1
                runs = [drain(work, sink, n, f"r{rnd}_{n}_{k}") for k in range(repeats)]
                rate = statistics.median(r["rate"] for r in runs)
                row[str(n)] = rate
                print(
                    f"round {rnd}: drain N={n:>6}: {rate:7.0f}/s "
                    f"({rate / row['baseline']:.2f}x baseline)",
                    flush=True,
                )
            if not args.skip_intake:
                idle = intake_p99(work, sink, 0, args)
                busy = intake_p99(work, sink, args.intake_backlog, args)
                row["intake_idle"], row["intake_draining"] = idle, busy
                print(
                    f"round {rnd}: intake idle p50 {idle['p50_us'] / 1000:.1f} ms p99 "
                    f"{idle['p99_us'] / 1000:.1f} ms {idle['rps']:.0f} req/s | draining p50 "
                    f"{busy['p50_us'] / 1000:.1f} ms p99 {busy['p99_us'] / 1000:.1f} ms "
                    f"{busy['rps']:.0f} req/s, {busy['delivered_during']} delivered meanwhile | "
                    f"p99 ratio {busy['p99_us'] / idle['p99_us']:.2f}, errors "
                    f"{idle['errors'] + busy['errors']}",
                    flush=True,
                )
            rounds.append(row)
    finally:
        sink.proc.stop()
        shutil.rmtree(work, ignore_errors=True)

    print()
    print("summary (median over rounds; ratios against the baseline of the same round)")
    base = statistics.median(r["baseline"] for r in rounds)
    print(f"  baseline raw aiohttp sender: {base:.0f}/s")
    summary: dict[str, Any] = {"baseline": base}
    for n in args.sizes:
        rate = statistics.median(r[str(n)] for r in rounds)
        ratio = statistics.median(r[str(n)] / r["baseline"] for r in rounds)
        summary[str(n)] = {"rate": rate, "ratio": ratio}
        print(f"  drain N={n:>6}: {rate:7.0f}/s, {ratio:.2f}x baseline")
    if "1000" in summary and "100000" in summary:
        spread = statistics.median(r["100000"] / r["1000"] for r in rounds)
        summary["large_vs_small"] = spread
        verdict = "ok" if abs(1 - spread) <= 0.2 else "MISSED"
        print(f"  N=100,000 / N=1,000 drain rate: {spread:.2f} (target within 0.8-1.2: {verdict})")
    if "20000" in summary:
        verdict = "ok" if summary["20000"]["rate"] >= 2000 else "MISSED"
        print(f"  N=20,000 absolute: {summary['20000']['rate']:.0f}/s (target >= 2,000: {verdict})")
    if not args.skip_intake:
        ratio = statistics.median(
            r["intake_draining"]["p99_us"] / r["intake_idle"]["p99_us"] for r in rounds
        )
        summary["intake_p99_ratio"] = ratio
        verdict = "ok" if ratio <= 2 else "MISSED"
        print(f"  intake p99 draining / idle: {ratio:.2f} (target <= 2: {verdict})")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rounds": rounds}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
