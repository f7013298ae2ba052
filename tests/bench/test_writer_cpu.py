"""bench/writer_cpu.py measures what it says: a short run on this checkout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_short_run_stores_and_indexes_every_lead() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "writer_cpu.py"),
            "--child",
            str(ROOT),
            "--posts",
            "6",
            "--leads",
            "10",
            "--per-commit",
            "4",
            "--warmup",
            "2",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    result = json.loads(out)
    # The child asserts every lead stored; each bench lead has an email.
    assert result["indexed"] is True
    assert result["hashed"] == (6 + 2) * 10
    assert result["us_per_lead"] > 0
