"""`lead-bridge worker` as a real process: SIGKILL mid-run, SIGTERM graceful stop."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.store.base import LeadIn
from bridge.store.sqlite import SQLiteStore
from tests.conftest import make_lead
from tests.connectors.fake_http import Answer, FakeHTTP
from tests.processes import BridgeProcess
from tests.waiting import DEADLINE, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def sink() -> Iterator[FakeHTTP]:
    with FakeHTTP(default=Answer(200, b"ok", delay=0.01)) as server:
        yield server


def setup(tmp_path: Path, sink_url: str, count: int) -> Path:
    db = tmp_path / "bridge.db"
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server": {"behind_proxy": True},
                "storage": {"url": f"sqlite:///{db}"},
                # shutdown_timeout: generous, in-flight sends finish well before it (0.3 s
                # answers) even on a busy machine; the SIGTERM test relies on that.
                "worker": {"poll_interval": "50ms", "lease": "2s", "shutdown_timeout": "60s"},
                "destinations": [
                    {
                        "name": "sink",
                        "type": "webhook",
                        "settings": {"url": f"{sink_url}/hook", "allow_private": True},
                        "retry": {"timeout": "1s"},
                        "flow": {"concurrency": 4},
                    }
                ],
            }
        )
    )

    async def fill() -> None:
        store = SQLiteStore(f"sqlite:///{db}")
        await store.open()
        leads = [
            LeadIn(f"led_{i:04d}", json.dumps(make_lead(f"led_{i:04d}"))) for i in range(count)
        ]
        await store.ingest(leads, ["sink"], [], time.time())
        await store.close()

    asyncio.run(fill())
    return config


def statuses(db: Path) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        store = SQLiteStore(f"sqlite:///{db}")
        await store.open()
        try:
            rows = await store._read(
                lambda c: c.execute(
                    "SELECT status, lease_token IS NOT NULL AND next_attempt_at > ?, count(*) "
                    "FROM deliveries GROUP BY 1, 2",
                    (time.time(),),
                ).fetchall()
            )
            return {f"{s}{'+leased' if leased else ''}": n for s, leased, n in rows}
        finally:
            await store.close()

    return asyncio.run(read())


def worker(tmp_path: Path, config: Path, n: int) -> BridgeProcess:
    return BridgeProcess(
        ["worker", "--config", str(config)], cwd=tmp_path, log=tmp_path / f"worker{n}.log"
    )


def expire_leases(db: Path) -> None:
    """Fast-forward past the killed worker's leases (each lasts retry.timeout * 3
    + 15 s) instead of waiting for them: the restarted worker claims them at once."""
    conn = sqlite3.connect(db, timeout=DEADLINE)
    try:
        with conn:
            conn.execute(
                "UPDATE deliveries SET next_attempt_at = ? WHERE lease_token IS NOT NULL",
                (time.time() - 1,),
            )
    finally:
        conn.close()


def seen_ids(sink: FakeHTTP) -> Counter[str]:
    return Counter(r.headers["webhook-id"] for r in list(sink.requests))


def test_sigkill_mid_run_then_restart_delivers_everything(tmp_path: Path, sink: FakeHTTP) -> None:
    count = 300
    config = setup(tmp_path, sink.url, count)
    # The first 60 deliveries are answered; every later one is held unanswered
    # until the kill, so the killed worker provably dies holding leases however
    # slow or fast the machine is.
    fast = sink.default
    sink.queue(*[fast] * 60)
    sink.default = Answer(200, b"ok", delay=DEADLINE)
    first = worker(tmp_path, config, 1)
    try:
        wait_until(lambda: len(sink.requests) > 60, "a delivery held by the sink")
        first.kill()
    finally:
        first.close()
    sink.default = fast
    mid = len(seen_ids(sink))
    assert 60 < mid < count
    db = tmp_path / "bridge.db"
    assert statuses(db).get("pending+leased", 0) > 0, "the killed worker held no leases"
    expire_leases(db)
    second = worker(tmp_path, config, 2)
    try:
        wait_until(lambda: len(seen_ids(sink)) == count, "all leads at the sink")
        wait_until(lambda: statuses(tmp_path / "bridge.db") == {"delivered": count}, "the store")
        assert second.terminate() == 0
    finally:
        second.close()
    seen = seen_ids(sink)
    assert len(seen) == count
    assert max(seen.values()) <= 2, "a lead reached the destination more than twice"


def test_sigterm_lets_inflight_finish_and_leaves_nothing_leased(tmp_path: Path) -> None:
    with FakeHTTP(default=Answer(200, b"ok", delay=0.3)) as slow:
        config = setup(tmp_path, slow.url, 50)
        proc = worker(tmp_path, config, 1)
        try:
            wait_until(lambda: len(slow.requests) >= 4, "deliveries in flight")
            assert proc.terminate(timeout=DEADLINE) == 0
        finally:
            proc.close()
    counts = statuses(tmp_path / "bridge.db")
    assert not any(key.endswith("+leased") for key in counts), counts
    assert counts.get("delivered", 0) >= 4
    assert sum(counts.values()) == 50
    assert "event=engine_stopped" in (tmp_path / "worker1.log").read_text()
