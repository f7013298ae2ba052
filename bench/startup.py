"""Start-up benchmark: time from exec to ready, and idle memory, of `lead-bridge serve`.

    python bench/startup.py                          # this checkout, 7 runs
    python bench/startup.py --trees /path/to/old .   # paired: A, B, A, B, ...

Each run writes a config with the four connector types that ship with an SDK or
an HTTP client (salesforce, hubspot, slack, webhook; nothing is sent: the remotes
are closed local ports) and a fresh SQLite store, starts
``python -m bridge serve`` with that tree as its working directory (so the
tree's own code is imported), and polls ``/readyz`` every 5 ms:

* **ready**: seconds from ``exec`` to the first ``200`` from ``/readyz``;
* **RSS**: after one idle second, the resident memory of the serve process and
  every process below it (the SQLite writer child), summed from ``/proc``.

Reported: the median of each tree's runs and, with two trees, the ratios B / A
(runs are interleaved, so a busy machine slows both alike). Targets (issue 18):
ready <= 1 s, RSS <= 100 MB.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml
from common import ROOT, free_port

CLOSED = "127.0.0.1:9"  # discard: nothing listens there on a test machine


def write_config(work: Path, port: int) -> Path:
    tree: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port, "behind_proxy": True},
        "auth": {"header_secrets": ["bench-startup-secret"]},
        "storage": {"url": f"sqlite:///{work / 'startup.db'}"},
        "destinations": [
            {
                "name": "crm",
                "type": "salesforce",
                "settings": {
                    "auth": {"mode": "token", "access_token": "00Dbench!token"},
                    "instance_url": f"https://{CLOSED}",
                    "external_id_field": "Lead_Bridge_Id__c",
                    "allow_private": True,
                },
                "mapping": {"LastName": "data.last_name", "Company": "data.organization_name"},
            },
            {
                "name": "contacts",
                "type": "hubspot",
                "settings": {
                    "access_token": "pat-na1-bench",
                    "host": f"http://{CLOSED}",
                    "allow_private": True,
                },
                "mapping": {"email": "data.email"},
            },
            {
                "name": "chat",
                "type": "slack",
                "settings": {
                    "webhook_url": f"http://{CLOSED}/services/T0/B0/bench",
                    "allow_private": True,
                },
            },
            {
                "name": "hook",
                "type": "webhook",
                "settings": {"url": f"http://{CLOSED}/hook", "allow_private": True},
            },
        ],
    }
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and its descendants."""
    children: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(
                line.split(":", 1) for line in status.read_text().splitlines() if ":" in line
            )
        except OSError:
            continue
        children.setdefault(int(fields["PPid"]), []).append(int(fields["Pid"]))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def one_run(tree: Path, python: str) -> tuple[float, int]:
    with tempfile.TemporaryDirectory(prefix="lb-startup-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        port = free_port()
        config = write_config(work, port)
        url = f"http://127.0.0.1:{port}/readyz"
        with (work / "serve.log").open("wb") as log:
            started = time.monotonic()
            proc = subprocess.Popen(
                [python, "-m", "bridge", "serve", "--config", str(config)],
                cwd=tree,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                with httpx.Client(timeout=1) as client:
                    while True:
                        if proc.poll() is not None:
                            raise RuntimeError(f"serve exited; see {work / 'serve.log'}")
                        try:
                            if client.get(url).status_code == 200:
                                break
                        except httpx.HTTPError:
                            pass
                        if time.monotonic() - started > 60:
                            raise TimeoutError(url)
                        time.sleep(0.005)
                ready = time.monotonic() - started
                time.sleep(1.0)
                rss = tree_rss(proc.pid)
            finally:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    return ready, rss


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=7, help="runs per tree")
    parser.add_argument("--trees", type=Path, nargs="+", default=[ROOT])
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    trees = [tree.resolve() for tree in args.trees]
    results: dict[Path, list[tuple[float, int]]] = {tree: [] for tree in trees}
    for run in range(args.runs):
        for tree in trees:
            ready, rss = one_run(tree, args.python)
            results[tree].append((ready, rss))
            print(f"run {run + 1} {tree.name}: ready {ready:.3f} s, RSS {rss / 2**20:.1f} MB")
    medians = {}
    print("\nmedians")
    for tree, runs in results.items():
        ready = statistics.median(r for r, _ in runs)
        rss = statistics.median(m for _, m in runs) / 2**20
        medians[tree] = (ready, rss)
        print(f"  {tree}: ready {ready:.3f} s, RSS {rss:.1f} MB (targets <= 1 s, <= 100 MB)")
    if len(trees) == 2:
        (a_ready, a_rss), (b_ready, b_rss) = medians[trees[0]], medians[trees[1]]
        print(f"  B / A: ready {b_ready / a_ready:.2f}x, RSS {b_rss / a_rss:.2f}x")


if __name__ == "__main__":
    main()
