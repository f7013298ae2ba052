"""Console pages end to end: each page of /admin/ui/ requested in-process
(routing, session, query, template) on 100k leads and 300k deliveries.

    python bench/console_pages.py                        # 100k leads, 7 runs each
    python bench/console_pages.py --leads 2000 --runs 3  # a quick smoke run

The store is seeded exactly as bench/console.py seeds it (its ``seed`` and
``runtime``); that benchmark times the operator functions alone, this one the
pages built on them, through the ASGI app with httpx (no socket, no TLS), as
the median of ``--runs`` after one warm-up, against the 200 ms target
(exit status 1 when a page is over).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from console import TARGET_MS, runtime, seed, timed  # bench/console.py
from pydantic import SecretStr

from bridge.app import create_app
from bridge.config import AdminConfig
from bridge.destinations import Runtime
from bridge.store.sqlite import SQLiteStore

TOKEN = "bench-console-admin-token"
UI = "/admin/ui"


def _ok(response: httpx.Response) -> httpx.Response:
    if response.status_code not in (200, 303):
        raise RuntimeError(f"{response.request.url}: HTTP {response.status_code}")
    return response


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    args = parser.parse_args()

    worst = 0.0
    work = Path(tempfile.mkdtemp(prefix="lb-console-pages-", dir=args.dir))
    db = work / "console.db"
    base = runtime(db)
    config = base.config.model_copy(update={"admin": AdminConfig(tokens=[SecretStr(TOKEN)])})
    rt = Runtime(config, base.destinations, [])
    try:
        store = SQLiteStore(f"sqlite:///{db}", synchronous="NORMAL")
        await store.open()
        assert store.search is not None
        hasher = store.search
        await store.close()
        t0 = time.perf_counter()
        seed(db, hasher, args.leads, time.time(), random.Random(7))
        seeded = time.perf_counter() - t0

        store = SQLiteStore(f"sqlite:///{db}", synchronous="NORMAL")
        await store.open()
        app = create_app(rt, store=store, start_workers=False, serve_metrics_port=False)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://bench")
        try:
            _ok(await client.post(f"{UI}/login", data={"token": TOKEN}))
            page = _ok(await client.get(f"{UI}/"))
            found = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert found, "no CSRF token on the overview"
            csrf = found.group(1)
            mid = args.leads // 2
            email = f"person{mid}@example{mid % 97}.com"
            lead_id = f"led_{mid:08d}"

            def get(path: str) -> Callable[[], Awaitable[Any]]:
                async def run() -> Any:
                    return _ok(await client.get(UI + path))

                return run

            def post(path: str, **form: str) -> Callable[[], Awaitable[Any]]:
                async def run() -> Any:
                    return _ok(await client.post(UI + path, data={"csrf": csrf, **form}))

                return run

            cases = [
                ("overview", get("/")),
                ("leads: newest 50", get("/leads")),
                ("leads: by email", post("/leads", email=email)),
                (
                    "leads: dead at salesforce",
                    post("/leads", status="dead", destination="salesforce"),
                ),
                ("lead timeline", get(f"/leads/{lead_id}")),
                ("dead letters", get("/dead-letters")),
                ("dead letters: replay preview, all", post("/dead-letters/replay", scope="all")),
                ("playground", get("/playground")),
                ("playground: a stored lead", post("/playground", stored_id=lead_id, action="run")),
                ("destinations", get("/destinations")),
                ("erase", get("/erase")),
                ("erase: preview by email", post("/erase/preview", email=email)),
            ]
            print(
                f"seeded {args.leads:,} leads in {seeded:.1f} s; "
                f"median of {args.runs} requests after a warm-up\n"
            )
            width = max(len(name) for name, _ in cases) + 2
            for name, fn in cases:
                ms = await timed(fn, args.runs)
                worst = max(worst, ms)
                print(f"{name:<{width}} {ms:8.1f} ms")
            print(f"{'slowest page':<{width}} {worst:8.1f} ms (target {TARGET_MS:.0f} ms)")
        finally:
            await client.aclose()
            await store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if worst > TARGET_MS else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
