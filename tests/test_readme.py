"""The README's promises that a test can hold: its two commands and its example."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quickstart_commands_exist_and_ci_runs_the_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    quickstart = readme[readme.index("## Quickstart") : readme.index("## Contents")]
    assert "scripts/run" in quickstart and "scripts/test" in quickstart
    for script in ("scripts/run", "scripts/test", "scripts/bootstrap", ".ci/run"):
        path = ROOT / script
        assert path.exists() and path.stat().st_mode & 0o111, script
    assert "exec scripts/test" in (ROOT / ".ci/run").read_text()
    assert "examples/quickstart.yaml" in (ROOT / "scripts/run").read_text()


def test_readme_example_connector_is_the_tested_file() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sync_readme.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_quickstart_config_is_valid() -> None:
    from bridge.destinations import load_runtime

    runtime = load_runtime(ROOT / "examples" / "quickstart.yaml", env={})
    assert [d.config.type for d in runtime.destinations] == ["jsonl"]
    assert runtime.config.server.tls.self_signed
    assert runtime.config.storage.url == "sqlite:///./data/lead-bridge.db"
