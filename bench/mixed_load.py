"""Intake and delivery in one `lead-bridge serve`: does each keep its share?

    python bench/mixed_load.py                                   # this checkout, 3 rounds
    python bench/mixed_load.py --tree ../before --tree . --rounds 3   # paired, interleaved

In `serve` (SQLite) intake and the delivery engine share one event loop and one
writer process. Two questions, each answered per tree and round (trees take
turns, their order alternating from round to round, on one shared sink):

1. **Sustained intake**: a store holding ``--backlog`` pending deliveries to
   bench/sink.py (a ``webhook`` destination, concurrency 32); once serve is
   draining it, wrk posts 1-lead webhooks at full speed (``--connections``) for
   ``--seconds``. Reported: leads received per second (wrk), leads delivered per
   second over the same window (the sink), and delivery's share of all the leads
   written, ``delivered / (received + delivered)`` (target: at least 0.20 while a
   backlog exists).
2. **Intake latency while draining**: paced 1-lead posts (bench/wrk_paced.lua, a
   moderate rate, so p99 is service time rather than a saturated queue's)
   against serve with no backlog, then with one. Reported: p99 idle, p99
   draining and their ratio (target: at most 2).

``--tree`` points at a checkout of this project (its own ``bridge`` package runs
serve and the writer; the interpreter and the prefill are this one's, so the
trees must share the database schema). Plain HTTP (``behind_proxy``), ``synchronous=FULL``, the
database on /var/tmp (real fsyncs). The machine is shared: compare trees within
one run, as ratios, never across runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from common import ROOT, SECRET, Proc, free_port, run_wrk
from drain import CONCURRENCY, WEBHOOK_SECRET, Sink, fresh_db, pending, prefill, wrk_paced


def write_config(work: Path, db: Path, sink_url: str, port: int) -> Path:
    tree: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port, "behind_proxy": True},  # plain HTTP
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
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


class Serve:
    """`lead-bridge serve` of one tree on a fresh store holding ``backlog`` deliveries."""

    def __init__(self, tree: Path, work: Path, sink: Sink, backlog: int, tag: str) -> None:
        self.db = fresh_db(work, "mixed.db")
        if backlog:
            prefill(self.db, backlog, tag)
        sink.reset()
        self.sink = sink
        self.port = free_port()
        config = write_config(work, self.db, sink.url, self.port)
        self.url = f"http://127.0.0.1:{self.port}/lead/webhook"
        self.proc = Proc(
            [sys.executable, "-m", "bridge", "serve", "--config", str(config)],
            work / "serve.log",
            cwd=tree,
        )
        self.proc.wait_http(f"http://127.0.0.1:{self.port}/healthz")
        if backlog:
            deadline = time.monotonic() + 60
            while sink.stats()["requests"] < 2 * CONCURRENCY:  # the drain is under way
                if time.monotonic() > deadline:
                    raise RuntimeError(f"serve does not deliver; see {work / 'serve.log'}")
                time.sleep(0.05)

    def pending(self) -> int:
        conn = sqlite3.connect(self.db, timeout=30)
        try:
            return pending(conn)
        finally:
            conn.close()

    def stop(self) -> None:
        self.proc.stop()


def sustained(
    tree: Path, work: Path, sink: Sink, args: argparse.Namespace, tag: str
) -> dict[str, Any]:
    serve = Serve(tree, work, sink, args.backlog, tag)
    try:
        before = sink.stats()["requests"]
        t0 = time.monotonic()
        result = run_wrk(
            serve.url,
            "wrk_leads.lua",
            args.seconds,
            args.connections,
            {"LEADS": "1"},
        )
        seconds = time.monotonic() - t0
        delivered = sink.stats()["requests"] - before
        left = serve.pending()
    finally:
        serve.stop()
    if left == 0:
        print("  warning: the backlog ran out during wrk; raise --backlog", flush=True)
    received = result["rps"]  # 1 lead per request
    rate = delivered / seconds
    return {
        "received": received,
        "delivered": rate,
        "share": rate / (received + rate),
        "p99_ms": result["p99_us"] / 1000,
        "errors": result["errors"],
    }


def paced(tree: Path, work: Path, sink: Sink, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for phase, backlog in (("idle", 0), ("draining", args.backlog)):
        serve = Serve(tree, work, sink, backlog, f"{tag}_{phase}")
        try:
            before = sink.stats()["requests"]
            t0 = time.monotonic()
            result = wrk_paced(serve.url, args.seconds, args.paced_connections, args.delay_ms)
            result["delivered"] = (sink.stats()["requests"] - before) / (time.monotonic() - t0)
        finally:
            serve.stop()
        out[phase] = result
    out["ratio"] = out["draining"]["p99_us"] / out["idle"]["p99_us"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tree", type=Path, action="append", help="a checkout (repeatable)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backlog", type=int, default=60000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64, help="sustained phase")
    parser.add_argument("--paced-connections", type=int, default=8)
    parser.add_argument("--delay-ms", type=int, default=16, help="paced: pause between posts")
    parser.add_argument("--skip-paced", action="store_true")
    parser.add_argument("--skip-sustained", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2
    trees = [t.resolve() for t in (args.tree or [ROOT])]
    names = [str(t) for t in trees]

    work = Path(tempfile.mkdtemp(prefix="lb-mixed-", dir="/var/tmp"))
    sink = Sink(work)
    rows: list[dict[str, Any]] = []
    try:
        for rnd in range(1, args.rounds + 1):
            order = list(zip(trees, names, strict=True))
            if rnd % 2 == 0:
                order.reverse()
            for tree, name in order:
                rows.append(one_round(rnd, tree, name, work, sink, args, f"r{rnd}_{len(rows)}"))
    finally:
        sink.proc.stop()
        shutil.rmtree(work, ignore_errors=True)

    print("\nsummary (median over rounds)")
    summary = {name: summarize(name, [r for r in rows if r["tree"] == name]) for name in names}
    if len(names) == 2:
        compare(names, rows)
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rounds": rows}, indent=2))
    return 0


def one_round(
    rnd: int, tree: Path, name: str, work: Path, sink: Sink, args: argparse.Namespace, tag: str
) -> dict[str, Any]:
    row: dict[str, Any] = {"round": rnd, "tree": name}
    parts = []
    if not args.skip_sustained:
        row["sustained"] = s = sustained(tree, work, sink, args, tag)
        parts.append(
            f"sustained received {s['received']:6.0f}/s, "
            f"delivered {s['delivered']:6.0f}/s, share {s['share']:.2f}"
        )
    if not args.skip_paced:
        row["paced"] = p = paced(tree, work, sink, args, tag)
        parts.append(
            f"paced p99 idle {p['idle']['p99_us'] / 1000:.1f} ms "
            f"({p['idle']['rps']:.0f} req/s), draining "
            f"{p['draining']['p99_us'] / 1000:.1f} ms ({p['draining']['rps']:.0f} "
            f"req/s, {p['draining']['delivered']:.0f} delivered/s), ratio {p['ratio']:.2f}"
        )
    print(f"round {rnd} {name}: {' | '.join(parts)}", flush=True)
    return row


def summarize(name: str, mine: list[dict[str, Any]]) -> dict[str, float]:
    s: dict[str, float] = {}
    parts = []
    if "sustained" in mine[0]:
        for key in ("received", "delivered", "share"):
            s[key] = statistics.median(r["sustained"][key] for r in mine)
        parts.append(
            f"received {s['received']:.0f}/s, delivered {s['delivered']:.0f}/s, "
            f"share {s['share']:.2f}"
        )
    if "paced" in mine[0]:
        s["p99_idle_ms"] = statistics.median(r["paced"]["idle"]["p99_us"] / 1000 for r in mine)
        s["p99_draining_ms"] = statistics.median(
            r["paced"]["draining"]["p99_us"] / 1000 for r in mine
        )
        s["p99_ratio"] = statistics.median(r["paced"]["ratio"] for r in mine)
        s["paced_delivered"] = statistics.median(r["paced"]["draining"]["delivered"] for r in mine)
        parts.append(
            f"paced p99 idle {s['p99_idle_ms']:.1f} ms, draining {s['p99_draining_ms']:.1f} ms, "
            f"ratio {s['p99_ratio']:.2f}, {s['paced_delivered']:.0f} delivered/s meanwhile"
        )
    print(f"  {name}: {'; '.join(parts)}")
    return s


def compare(names: list[str], rows: list[dict[str, Any]]) -> None:
    """Per round, the second tree's figure over the first's (the pair ran back to back)."""
    a, b = names
    second = {r["round"]: r for r in rows if r["tree"] == b}
    first = [r for r in rows if r["tree"] == a]
    measures = [
        ("sustained", "delivered", "delivered/s under sustained intake"),
        ("sustained", "received", "received/s under sustained intake"),
    ]
    for phase, key, label in measures:
        if phase not in first[0]:
            continue
        ratios = [
            second[r["round"]][phase][key] / r[phase][key] for r in first if r[phase][key] > 0
        ]
        print(
            f"  {label}, second / first tree: {statistics.median(ratios):.2f} "
            f"(per round: {', '.join(f'{x:.2f}' for x in ratios)})"
        )
    if "paced" in first[0]:
        for phase in ("idle", "draining"):
            ratios = [
                second[r["round"]]["paced"][phase]["p99_us"] / r["paced"][phase]["p99_us"]
                for r in first
            ]
            print(
                f"  paced p99 {phase}, second / first tree: {statistics.median(ratios):.2f} "
                f"(per round: {', '.join(f'{x:.2f}' for x in ratios)})"
            )


if __name__ == "__main__":
    raise SystemExit(main())
