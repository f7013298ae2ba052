"""Intake benchmark: `lead-bridge serve` against the ceiling of a Python receiver.

    python bench/intake.py                      # SQLite, HTTPS, 2 rounds of 10 s each
    python bench/intake.py --storage-url postgresql://postgres@127.0.0.1:5432/test
    python bench/intake.py --cpus 0 --plain     # service and ceiling pinned to CPU 0
    python bench/intake.py --tree /work/base --tree . --rounds 4   # two checkouts, paired
    python bench/intake.py --access-log both    # the access line's cost, paired

Every server runs on the same uvicorn settings (TLS unless ``--plain``, uvloop,
httptools, one process); the ceiling (bench/ceiling.py) only parses the JSON
and answers 200. wrk (apt-get install wrk) posts bodies of 1 and 10 leads with
unique ids at concurrency 64. In each round the ceiling and every service
variant (each ``--tree`` checkout, with and without the access log line) take
turns, in an order that alternates between rounds, so that noise on this
shared machine hits all of them; the report gives each figure as a ratio to the
ceiling measured in the same round, and the variants' ratios to the first one.

``--cpus 0`` pins the ceiling and the service (serve and its SQLite writer
child alike: the affinity is inherited) to CPU 0 with taskset, and wrk to the
other CPUs. Next to req/s the report gives the CPU time of the server's whole
process tree per request (from /proc, read before and after the run), which
a busy neighbour on the machine changes much less than throughput.
Nothing here is a test: CI times nothing.
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
from common import HERE, ROOT, SECRET, Proc, free_port, run_wrk

_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of ``pid`` and of its descendants alive now."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / _TICK
    tree, todo = {pid}, [pid]
    while todo:
        parent = todo.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                todo.append(child)
    return times.get(pid, 0.0), sum(times.get(p, 0.0) for p in tree - {pid})


def wrk_leads(
    url: str, leads: int, seconds: int, connections: int, cpus: str | None, server: Proc
) -> dict[str, Any]:
    """One wrk run, with the server's CPU time per request (ms) measured around it."""
    pid = server.proc.pid
    own, children = tree_cpu(pid)
    result = run_wrk(url, "wrk_leads.lua", seconds, connections, {"LEADS": str(leads)}, cpus)
    own_after, children_after = tree_cpu(pid)
    per_request = 1000 / max(result["requests"], 1)
    result["cpu_ms"] = (own_after + children_after - own - children) * per_request
    # the SQLite writer process, part of cpu_ms
    result["child_cpu_ms"] = (children_after - children) * per_request
    result["leads_per_s"] = result["rps"] * leads
    return result


def make_cert(work: Path) -> tuple[Path, Path]:
    from bridge.tls import make_self_signed

    cert, key = work / "cert.pem", work / "key.pem"
    make_self_signed(cert, key, hostnames=["localhost"])
    return cert, key


def service_config(
    work: Path,
    port: int,
    tls: tuple[Path, Path] | None,
    storage_url: str | None,
    access_log: bool,
) -> Path:
    server: dict[str, Any] = {"host": "127.0.0.1", "port": port, "access_log": access_log}
    if tls is not None:
        server["tls"] = {"certfile": str(tls[0]), "keyfile": str(tls[1])}
    else:  # plain HTTP, as behind a TLS proxy
        server["behind_proxy"] = True
    tree = {
        "server": server,
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


class Variant:
    """One server to measure: the ceiling, or the service of one checkout."""

    def __init__(self, label: str, tree: Path | None, access_log: bool = True) -> None:
        self.label, self.tree, self.access_log = label, tree, access_log

    def python(self) -> str:
        if self.tree is None:
            return sys.executable
        venv = self.tree / ".venv" / "bin" / "python"
        return str(venv) if venv.exists() else sys.executable

    def start(self, work: Path, tls: tuple[Path, Path] | None, args: Any) -> tuple[Proc, str]:
        port = free_port()
        scheme = "http" if tls is None else "https"
        pin = ["taskset", "-c", args.cpus] if args.cpus else []
        env = dict(os.environ)
        if self.tree is None:
            command = [sys.executable, str(HERE / "ceiling.py"), "--port", str(port)]
            if tls is not None:
                command += ["--certfile", str(tls[0]), "--keyfile", str(tls[1])]
            proc = Proc([*pin, *command], work / "ceiling.log", cwd=work)
            proc.wait_http(f"{scheme}://127.0.0.1:{port}/lead/webhook")
            return proc, f"{scheme}://127.0.0.1:{port}/lead/webhook"
        db = work / "bench.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        if args.storage_url:
            reset_postgres(args.storage_url)
        config = service_config(work, port, tls, args.storage_url, self.access_log)
        env["PYTHONPATH"] = str(self.tree)
        # logging at INFO: one access line per request, as in production (unless off)
        command = [self.python(), "-m", "bridge", "serve", "--config", str(config)]
        proc = Proc([*pin, *command], work / "service.log", cwd=work, env=env)
        proc.wait_http(f"{scheme}://127.0.0.1:{port}/healthz")
        return proc, f"{scheme}://127.0.0.1:{port}/lead/webhook"


def other_cpus(pinned: str) -> str:
    """The CPUs not in ``pinned`` (a taskset list such as "0" or "0,1")."""
    taken = {int(c) for c in pinned.split(",")}
    rest = [str(c) for c in sorted(os.sched_getaffinity(0)) if c not in taken]
    if not rest:
        raise SystemExit(f"--cpus {pinned}: no CPU left for wrk")
    return ",".join(rest)


def variants(args: Any) -> list[Variant]:
    trees = [Path(t).resolve() for t in (args.tree or [str(ROOT)])]
    logs = {"on": [True], "off": [False], "both": [True, False]}[args.access_log]
    out = []
    for tree in trees:
        name = "service" if len(trees) == 1 else str(tree)
        for on in logs:
            label = name if len(logs) == 1 else f"{name} access log {'on' if on else 'off'}"
            out.append(Variant(label, tree, on))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--leads", default="1,10", help="leads per post, comma-separated")
    parser.add_argument("--storage-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--tree", action="append", help="a checkout whose service to measure")
    parser.add_argument(
        "--access-log",
        choices=["on", "off", "both"],
        default="on" if os.environ.get("BENCH_ACCESS_LOG", "1") == "1" else "off",
        help="the per-request access line (default on, or BENCH_ACCESS_LOG=0: off)",
    )
    parser.add_argument("--cpus", default=None, help="pin the servers here (taskset list)")
    parser.add_argument("--plain", action="store_true", help="plain HTTP, no TLS")
    parser.add_argument("--no-ceiling", action="store_true", help="services only")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2
    wrk_cpus = other_cpus(args.cpus) if args.cpus else None

    work = Path(tempfile.mkdtemp(prefix="lb-bench-", dir="/var/tmp"))
    tls = None if args.plain else make_cert(work)
    disk = disk_check(work)
    print(
        f"disk: {disk['fsyncs']} fsyncs of 16 KiB in 3 s, p50 {disk['p50_ms']:.2f} ms, "
        f"p99 {disk['p99_ms']:.2f} ms, max {disk['max_ms']:.1f} ms, "
        f"{disk['stalls_over_20ms']} over 20 ms",
        flush=True,
    )
    services = variants(args)
    servers = services if args.no_ceiling else [Variant("ceiling", None), *services]
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        for rnd in range(args.rounds):
            for leads in (int(n) for n in args.leads.split(",")):
                order = servers if rnd % 2 == 0 else servers[::-1]
                row: dict[str, Any] = {"round": rnd + 1, "leads_per_post": leads}
                for server in order:
                    proc, url = server.start(work, tls, args)
                    try:
                        row[server.label] = wrk_leads(
                            url, leads, args.seconds, args.connections, wrk_cpus, proc
                        )
                    finally:
                        proc.stop()
                results.setdefault(str(leads), []).append(row)
                print(f"round {rnd + 1} {leads:>2}-lead:", flush=True)
                for server in servers:
                    r = row[server.label]
                    line = (
                        f"  {server.label:>24}: {r['rps']:7.0f} req/s "
                        f"({r['leads_per_s']:7.0f} leads/s) CPU {r['cpu_ms']:.3f} ms/req "
                        f"(child {r['child_cpu_ms']:.3f}) "
                        f"p50 {r['p50_us'] / 1000:5.1f} ms p99 {r['p99_us'] / 1000:5.1f} ms "
                        f"errors {r['errors']}"
                    )
                    if server is not servers[0]:
                        first = row[servers[0].label]
                        line += f" | {r['rps'] / first['rps']:.2f}x {servers[0].label}"
                    print(line, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(
        f"summary (median over {args.rounds} rounds; ratios within each round, "
        f"against {servers[0].label}; CPU = the server's process tree per request)"
    )
    summary: dict[str, dict[str, Any]] = {}
    for leads, rows in results.items():
        for server in servers:
            mine = [r[server.label] for r in rows]
            med = {
                "rps": statistics.median(m["rps"] for m in mine),
                "leads_per_s": statistics.median(m["leads_per_s"] for m in mine),
                "cpu_ms": statistics.median(m["cpu_ms"] for m in mine),
                "child_cpu_ms": statistics.median(m["child_cpu_ms"] for m in mine),
                "p50_ms": statistics.median(m["p50_us"] for m in mine) / 1000,
                "p99_ms": statistics.median(m["p99_us"] for m in mine) / 1000,
                "errors": sum(m["errors"] for m in mine),
                "ratios": [r[server.label]["rps"] / r[servers[0].label]["rps"] for r in rows],
            }
            summary[f"{leads}/{server.label}"] = med
            ratios = ", ".join(f"{x:.2f}" for x in med["ratios"])
            print(
                f"  {leads:>2}-lead {server.label:>24}: {med['rps']:7.0f} req/s, "
                f"{med['leads_per_s']:7.0f} leads/s, CPU {med['cpu_ms']:.3f} ms/req "
                f"(child {med['child_cpu_ms']:.3f}), "
                f"p50 {med['p50_ms']:.1f} ms, p99 {med['p99_ms']:.1f} ms, "
                f"errors {med['errors']}"
                + (
                    ""
                    if server is servers[0]
                    else f" | x {servers[0].label}: median "
                    f"{statistics.median(med['ratios']):.2f} ({ratios})"
                )
            )
    if args.json:
        args.json.write_text(
            json.dumps({"summary": summary, "disk": disk, "rounds": results}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
