"""The SQLite writer's CPU per stored lead, for several checkouts, taking turns.

What the writer process does for intake's 10-lead posts, and nothing else:
``prepare_body`` (parse and split the body, the search hashes where the
checkout has them) and ``run_ingests`` for a few posts per transaction, as
``GroupCommit`` runs them, on a SQLite file with ``synchronous=OFF`` (no fsync:
CPU only, the figure intake's 10-lead posts are bound by). CPU time of this
process (``time.process_time``), not wall time, over ``--posts`` posts per run;
each run is a fresh child process importing ``bridge`` from one checkout, and
the checkouts take turns (``--rounds`` times), so a busy neighbour slows all of
them alike. Reports µs per stored lead: the median and the lowest run.

    python bench/writer_cpu.py --tree /work/base --tree /tmp/before --tree .

A checkout without the search index (no ``set_search_key``) stores the leads
only; one whose ``prepare_body`` takes a hasher gets the writer's key there.
The search index's batches (``index_search``, run after the timed commits)
are reported apart: their CPU per lead is spent off the commit path.
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# The lead of bench/wrk_leads.lua (a typical provider lead).
LEAD = (
    '{"id":"led_%s","url":"https://some-site.com/page-with-lead-form/",'
    '"created":"2018-07-12T16:29:42Z","data":{"first_name":"John","middle_name":"",'
    '"last_name":"Doe","phone":"+123123123123123","position":"Agent",'
    '"email":"john.doe@example.com","state":"Georgia","organization_name":"Org",'
    '"organization_size":"101-250","organization_country":"United States",'
    '"organization_state":"Alabama","organization_city":"Montgomery",'
    '"interested_in":"I would like information for my department"}}'
)


def bodies(count: int, leads: int, prefix: str) -> list[bytes]:
    return [
        ("[" + ",".join(LEAD % f"{prefix}{n}_{i}" for i in range(leads)) + "]").encode()
        for n in range(count)
    ]


def child(tree: str, posts: int, leads: int, per_commit: int, warmup: int) -> dict[str, Any]:
    sys.path.insert(0, tree)
    import bridge
    from bridge.store import sqlite_writes as w
    from bridge.store.sqlite_schema import connect, migrate

    where = Path(bridge.__file__).resolve()
    assert where.is_relative_to(Path(tree).resolve()), f"bridge imported from {where}"
    with tempfile.TemporaryDirectory(prefix="writer-cpu-") as tmp:
        conn = connect(Path(tmp) / "w.db", "OFF")
        migrate(conn)
        indexed = hasattr(w, "set_search_key")
        if indexed:
            w.set_search_key(conn, b"k" * 32)
        takes_hasher = "hasher" in inspect.signature(w.prepare_body).parameters
        extra = (w.search_hasher(conn),) if takes_hasher else ()
        dests = ("crm",)

        def run(items: list[bytes]) -> None:
            for start in range(0, len(items), per_commit):
                prepared = [
                    w.prepare_body(b, dests, 1.0, *extra) for b in items[start : start + per_commit]
                ]
                conn.execute("BEGIN IMMEDIATE")
                w.run_ingests(conn, prepared)
                conn.execute("COMMIT")

        run(bodies(warmup, leads, "w"))
        items = bodies(posts, leads, "m")
        began = time.process_time()
        run(items)
        spent = time.process_time() - began
        stored = conn.execute("SELECT count(*) FROM leads").fetchone()[0]
        assert stored == (warmup + posts) * leads, stored
        index_us = None
        if hasattr(w, "index_search"):
            # The search index's batches (bridge/store/sqlite.py runs them every
            # second, deferred while intake keeps the writer busy): their CPU
            # per lead, apart, as it is spent off the commit path.
            began = time.process_time()
            while True:
                conn.execute("BEGIN IMMEDIATE")
                done = w.index_search(conn, 2000)
                conn.execute("COMMIT")
                if done < 2000:
                    break
            index_us = (time.process_time() - began) / stored * 1e6
        # Leads the search index covers: the lead rows' hash columns in older
        # checkouts, the lead_search table once the index left the commit path.
        covered = (
            "SELECT count(DISTINCT lead_id) FROM lead_search"
            if index_us is not None
            else "SELECT count(*) FROM leads WHERE email_hash IS NOT NULL"
        )
        hashed = conn.execute(covered).fetchone()[0] if indexed else 0
        assert hashed in (0, stored), hashed
        conn.close()
    return {
        "us_per_lead": spent / (posts * leads) * 1e6,
        "indexed": indexed,
        "index_us": index_us,
        "hashed": hashed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", help="a checkout to measure (repeatable)")
    parser.add_argument("--rounds", type=int, default=15, help="runs per checkout, taking turns")
    parser.add_argument("--posts", type=int, default=2000, help="posts per run")
    parser.add_argument("--leads", type=int, default=10, help="leads per post")
    parser.add_argument("--per-commit", type=int, default=8, help="posts per transaction")
    parser.add_argument("--warmup", type=int, default=200, help="posts before the clock starts")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.posts, args.leads, args.per_commit, args.warmup)))
        return 0
    trees = args.tree or ["."]
    runs: dict[str, list[float]] = {t: [] for t in trees}
    index_runs: dict[str, list[float]] = {t: [] for t in trees}
    info: dict[str, dict[str, Any]] = {}
    for round_no in range(args.rounds):
        order = trees if round_no % 2 == 0 else trees[::-1]  # no order bias
        for tree in order:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    tree,
                    "--posts",
                    str(args.posts),
                    "--leads",
                    str(args.leads),
                    "--per-commit",
                    str(args.per_commit),
                    "--warmup",
                    str(args.warmup),
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            result = json.loads(out)
            runs[tree].append(result["us_per_lead"])
            if result["index_us"] is not None:
                index_runs[tree].append(result["index_us"])
            info[tree] = result
    print(
        f"writer CPU per stored lead ({args.leads}-lead posts, {args.per_commit} per commit, "
        f"{args.posts} posts x {args.rounds} runs each)"
    )
    for tree in trees:
        r = runs[tree]
        index = "no search index"
        if index_runs[tree]:
            index = f"search index batches: median {statistics.median(index_runs[tree]):.1f} us"
        print(f"  {tree}: median {statistics.median(r):.1f} us, min {min(r):.1f} us ({index})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
