"""bench/drain.py's drain, for two checkouts taking turns: rate and CPU per delivery.

    python bench/drain_paired.py --tree /work/base:/work/base/.venv/bin/python --tree . \\
        --rounds 6 --n 20000

Each ``--tree PATH[:PYTHON]`` is a checkout of this project and the interpreter
to run it with (default: this one). Per round, in alternating order, each tree
fills a fresh SQLite store with N pending deliveries through its own intake path
(its own ``bench/drain.py``'s ``prefill``), then runs its own `lead-bridge worker`
against the shared bench/sink.py, timed as bench/drain.py does (from the sink's
first request to no delivery pending). Besides the rate, it reports the CPU
time of the worker and its SQLite writer child per delivery (``RUSAGE_CHILDREN``
around the worker's life): on a machine shared with other jobs the rate follows
the neighbours' load, the CPU per delivery much less.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import Proc
from drain import Sink, counts, fresh_db, pending, write_config


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def drain_tree(tree: Path, python: str, work: Path, sink: Sink, n: int, tag: str) -> dict[str, Any]:
    db = fresh_db(work, "drain.db")
    fill = (
        "import sys; from pathlib import Path; sys.path[:0] = ['bench', '.']; import drain; "
        f"drain.prefill(Path({str(db)!r}), {n}, {tag!r})"
    )
    subprocess.run([python, "-c", fill], cwd=tree, check=True)
    sink.reset()
    config = write_config(work, db, sink.url)
    cpu0 = children_cpu()
    worker = Proc([python, "-m", "bridge", "worker", "--config", str(config)], work / "w.log", tree)
    conn = sqlite3.connect(db, timeout=30)
    try:
        deadline = time.monotonic() + 120 + n / 100
        while sink.stats()["requests"] < n:
            if worker.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{tree}: worker stopped or stalled; see {work / 'w.log'}")
            time.sleep(0.05)
        while pending(conn) > 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{tree}: deliveries still pending")
            time.sleep(0.002)
        end = time.monotonic()
    finally:
        conn.close()
        worker.stop()  # waits for it: its CPU (and its reaped writer's) is counted now
    cpu = children_cpu() - cpu0
    stats = sink.stats()
    by_status = counts(db)
    if stats["unique"] != n or stats["requests"] != n or by_status != {"delivered": n}:
        raise RuntimeError(f"{tree}: sink {stats}, store {by_status}")
    return {"rate": n / (end - stats["first"]), "cpu_ms": cpu * 1000 / n, "cpu": cpu}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tree", action="append", required=True, help="PATH[:PYTHON]")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument(
        "--small", type=int, default=0, help="also drain this many: the marginal CPU per delivery"
    )
    args = parser.parse_args()
    trees = []
    for spec in args.tree:
        path, _, python = spec.partition(":")
        trees.append((Path(path).resolve(), python or sys.executable))
    if len(trees) != 2:
        parser.error("two --tree, please")

    work = Path(tempfile.mkdtemp(prefix="lb-drain2-", dir="/var/tmp"))
    sink = Sink(work)
    results: list[list[dict[str, Any]]] = [[], []]
    try:
        for rnd in range(1, args.rounds + 1):
            order = [0, 1] if rnd % 2 else [1, 0]
            for i in order:
                tree, python = trees[i]
                r = drain_tree(tree, python, work, sink, args.n, f"r{rnd}t{i}")
                text = ""
                if args.small:
                    # Start-up and shutdown cost the same at either size: the
                    # difference is what the deliveries themselves cost.
                    small = drain_tree(tree, python, work, sink, args.small, f"r{rnd}t{i}s")
                    r["marginal_ms"] = (r["cpu"] - small["cpu"]) * 1000 / (args.n - args.small)
                    r["fixed_s"] = small["cpu"] - r["marginal_ms"] * args.small / 1000
                    text = (
                        f", marginal {r['marginal_ms']:.3f} ms per delivery, "
                        f"start-up and shutdown {r['fixed_s']:.2f} s CPU"
                    )
                results[i].append(r)
                print(
                    f"round {rnd} {tree}: {r['rate']:6.0f} deliveries/s, "
                    f"{r['cpu_ms']:.3f} ms CPU per delivery (worker + writer){text}",
                    flush=True,
                )
    finally:
        sink.proc.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nsummary, N={args.n}, {args.rounds} interleaved rounds (medians)")
    for (tree, _), rs in zip(trees, results, strict=True):
        print(
            f"  {tree}: {statistics.median(r['rate'] for r in rs):.0f} deliveries/s, "
            f"{statistics.median(r['cpu_ms'] for r in rs):.3f} ms CPU per delivery"
        )
    keys = [("rate", "deliveries/s"), ("cpu_ms", "CPU per delivery")]
    if args.small:
        keys += [("marginal_ms", "marginal CPU per delivery"), ("fixed_s", "start-up CPU")]
    for key, label in keys:
        ratios = [b[key] / a[key] for a, b in zip(results[0], results[1], strict=True)]
        print(
            f"  {label}, second / first tree: {statistics.median(ratios):.3f} "
            f"(per round: {', '.join(f'{x:.2f}' for x in ratios)})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
