"""scripts/test: every stage runs, and the failed ones are named at the end.

The script is run for real, in a copy of the repository's layout whose
bootstrap, virtualenv and tools are stand-ins that exit with the status a
test asks for and note that they ran.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def fake_repo(tmp_path: Path, failing: set[str]) -> tuple[Path, Path]:
    repo, bin_dir, ran = tmp_path / "repo", tmp_path / "bin", tmp_path / "ran"
    (repo / "scripts").mkdir(parents=True)
    (repo / ".venv" / "bin").mkdir(parents=True)
    bin_dir.mkdir()
    shutil.copy(ROOT / "scripts" / "test", repo / "scripts" / "test")
    (repo / "scripts" / "bootstrap").write_text("#!/bin/sh\nexit 0\n")
    (repo / ".venv" / "bin" / "activate").write_text(f'PATH="{bin_dir}:$PATH"\n')
    tools = {"python": "python", "ruff": "ruff", "mypy": "mypy", "pytest": "pytest"}
    for tool, name in tools.items():
        status = 1 if name in failing else 0
        (bin_dir / tool).write_text(f'#!/bin/sh\necho "{name} $*" >> "{ran}"\nexit {status}\n')
    status = 1 if "container" in failing else 0
    (repo / "scripts" / "container-test.sh").write_text(
        f'echo "container" >> "{ran}"\nexit {status}\n'
    )
    for path in [*bin_dir.iterdir(), *(repo / "scripts").iterdir()]:
        path.chmod(0o755)
    return repo, ran


def run(repo: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(repo / "scripts" / "test"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "LEAD_BRIDGE_SKIP_CONTAINER": "0", **env},
        timeout=60,
    )


def test_a_failing_stage_does_not_skip_the_later_ones(tmp_path: Path) -> None:
    repo, ran = fake_repo(tmp_path, failing={"mypy", "pytest"})
    result = run(repo, "-k", "intake")
    assert result.returncode == 1
    stages = [line.split()[0] for line in ran.read_text().splitlines()]
    assert stages == ["python", "ruff", "ruff", "mypy", "pytest", "container"]
    assert (
        "pytest -q -p no:cacheprovider --durations=25 -k intake" in ran.read_text()
    )  # arguments pass on
    assert result.stderr.strip().splitlines()[-1] == "scripts/test: FAILED stage(s): mypy, pytest"


@pytest.mark.parametrize("failing", [{"container"}, {"ruff"}])
def test_the_failed_stage_is_named(tmp_path: Path, failing: set[str]) -> None:
    repo, _ = fake_repo(tmp_path, failing=failing)
    result = run(repo)
    assert result.returncode == 1
    named = {"container": "container", "ruff": "ruff check, ruff format"}[next(iter(failing))]
    assert result.stderr.strip().endswith(f"FAILED stage(s): {named}")


def test_all_green_exits_zero_and_the_container_step_can_be_skipped(tmp_path: Path) -> None:
    repo, ran = fake_repo(tmp_path, failing=set())
    result = run(repo, LEAD_BRIDGE_SKIP_CONTAINER="1")
    assert result.returncode == 0, result.stderr
    assert "container" not in ran.read_text()
    assert "all stages passed" in result.stdout
