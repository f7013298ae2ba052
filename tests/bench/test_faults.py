"""The fault suite, short: bench/faults.py with a few hundred leads and three kills
(two of the service, one of the SQLite writer child) must end with every lead
acknowledged, and each one delivered or dead for the sink's permanent refusal only:
nothing lost, nothing stuck, one idempotency key per lead and destination.

It waits for states (the service ready, the writer replaced, the queue settled),
never for fixed times; the run is bounded by its lead count and rate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.config import RetryConfig

ROOT = Path(__file__).resolve().parents[2]
LEADS = 240
KILLS = 3

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def run_faults(tmp_path: Path, *extra: str) -> tuple[int, dict[str, object], str]:
    out = tmp_path / "faults.json"
    args = [
        f"--leads={LEADS}",
        f"--kills={KILLS}",
        "--rate=40",
        "--settle=60",
        "--burst-every=150",
        f"--work={tmp_path / 'work'}",
        f"--json={out}",
    ]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "faults.py"), *args, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=840,
    )
    result = json.loads(out.read_text()) if out.exists() else {}
    return proc.returncode, result, proc.stdout + proc.stderr


# Issue 12 item 1: the service bounds Retry-After (and the suite sets the bound to 2 s).
BOUNDED = "max_retry_after" in RetryConfig.model_fields


def test_short_fault_run_loses_nothing_and_leaves_nothing_stuck(tmp_path: Path) -> None:
    code, r, output = run_faults(tmp_path)

    assert r, output
    assert r["leads"] == LEADS + 1, output  # and one lead holding a lone surrogate
    assert r["acknowledged"] == r["leads"] and r["unacknowledged"] == 0, output
    assert r["lost"] == 0, output
    assert r["more_than_one_idempotency_key"] == 0, output
    assert r["notices_with_lead_data"] == 0, output  # the notifier's posts (alerts.url)
    # Every fault really happened.
    assert r["service_kills"] == 2 and r["writer_kills"] == 1, output
    answers = r["sink_answers"]
    assert isinstance(answers, dict)
    for kind in ("5xx", "reset", "hang", "429", "200"):
        assert answers.get(kind, 0) > 0, (kind, output)
    if not BOUNDED:
        # Until it is fixed, the suite must see the defect: leads stuck behind an endless
        # pause, or dead after one 429 whose Retry-After was beyond retry.max_age.
        reasons = r["dead_reasons"]
        assert isinstance(reasons, dict)
        assert r["stuck_pending"] or any("429" in reason for reason in reasons), output
        assert code == 1, output
        pytest.xfail("issue 12 item 1: an absurd Retry-After stops a destination")
    assert r["stuck_pending"] == 0, output
    assert r["dead_unexpected"] == 0, output
    stored = r["leads"] - r["quarantined_at_intake"]  # type: ignore[operator]
    assert r["delivered"] + r["dead"] == stored * r["destinations"], output  # type: ignore[operator]
    assert code == 0, output


@pytest.mark.postgres
def test_three_replicas_on_one_postgresql_lose_nothing(tmp_path: Path) -> None:
    """Issue 17: three services share one PostgreSQL schema, the provider spreads its
    posts over them and each kill hits one at random while the others keep going."""
    from tests.store.conftest import PG_URL

    code, r, output = run_faults(tmp_path, f"--storage-url={PG_URL}", "--replicas=3")
    assert r, output
    assert r["replicas"] == 3 and r["service_kills"] == KILLS, output
    assert r["acknowledged"] == r["leads"] and r["unacknowledged"] == 0, output
    assert r["lost"] == 0 and r["stuck_pending"] == 0, output
    assert r["more_than_one_idempotency_key"] == 0, output
    assert r["dead_unexpected"] == 0, output
    assert code == 0, output
