"""scripts/run: runtime dependencies only, 127.0.0.1, and a banner that works.

The script runs for real in a copy of the repository's layout whose
`scripts/bootstrap` is a stand-in (the test's own virtualenv is already set up),
so what is tested is everything after the install: the config, the secret, the
server and the banner printed once it is ready, whose curl command is then run.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import httpx
import pytest

from tests.processes import free_port
from tests.waiting import DEADLINE

ROOT = Path(__file__).resolve().parents[2]
DEV_TOOLS = {"pytest", "mypy", "ruff", "hypothesis", "respx", "trustme"}


def test_run_installs_runtime_dependencies_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert "scripts/bootstrap all" in (ROOT / "scripts" / "run").read_text()
    parts = extras["all"][0].removeprefix("lead-bridge[").removesuffix("]").split(",")
    runtime = project["dependencies"] + [r for name in parts for r in extras[name]]
    names = {re.split(r"[<>=\[; ]", r, maxsplit=1)[0].lower() for r in runtime}
    assert not names & DEV_TOOLS
    assert extras["all"] == ["lead-bridge[salesforce,hubspot,postgres]"]
    assert "lead-bridge[all]" in extras["dev"]  # the test venv serves scripts/run too


def fake_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    for rel in (
        "scripts/run",
        "scripts/quickstart_banner.py",
        "examples/quickstart.yaml",
        "tests/fixtures/seed_curl_body.json",
    ):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, repo / rel)
    (repo / "scripts" / "bootstrap").write_text('#!/bin/sh\necho "bootstrap $*"\n')
    (repo / "scripts" / "bootstrap").chmod(0o755)
    (repo / ".venv").symlink_to(Path(sys.prefix))
    return repo


def read_until(
    proc: subprocess.Popen[str], marker: str, timeout: float, pumps: list[threading.Thread]
) -> list[str]:
    """The output up to the banner's end (its first blank line after ``marker``).

    A thread reads it (appended to ``pumps``): the caller joins it once the
    process is gone, before closing stdout, so it never reads a closed file."""
    assert proc.stdout is not None
    stdout = proc.stdout
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    thread = threading.Thread(target=pump, daemon=True)
    pumps.append(thread)
    thread.start()
    seen: list[str] = []
    in_banner = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        if line is None:
            break  # the script exited
        if in_banner and not line.strip():
            return seen
        in_banner = in_banner or marker in line
        seen.append(line)
    raise AssertionError("no banner:\n" + "\n".join(seen))


@pytest.mark.slow
def test_run_starts_the_quickstart_and_prints_a_working_banner(tmp_path: Path) -> None:
    if not Path(sys.prefix, "bin", "lead-bridge").exists():
        pytest.skip("lead-bridge is not installed in this interpreter's virtualenv")
    repo = fake_repo(tmp_path)
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LEAD_WEBHOOK_SECRET", "LEAD_BRIDGE_CONFIG")
    }
    proc = subprocess.Popen(
        ["bash", "scripts/run", "--port", str(port)],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    pumps: list[threading.Thread] = []
    try:
        lines = read_until(proc, "Lead Bridge is ready", 180, pumps)
        text = "\n".join(lines)
        assert lines[0] == "bootstrap all"
        webhook = f"https://127.0.0.1:{port}/lead/webhook"
        assert f"webhook  POST {webhook}" in text
        assert "Authorization: local-dev-secret, from the quickstart default" in text
        assert "admin    off (set admin.tokens" in text
        assert "lead-bridge status --config examples/quickstart.yaml" in text
        curl = next(line.strip() for line in lines if line.strip().startswith("curl "))
        assert curl == (
            f"curl --cacert data/tls/cert.pem -X POST '{webhook}' "
            "-H 'Content-Type: application/json' -H 'Authorization: local-dev-secret' "
            "-d @tests/fixtures/seed_curl_body.json"
        )
        # What the curl line does, done with httpx (no curl binary needed).
        answer = httpx.post(
            webhook,
            content=(repo / "tests/fixtures/seed_curl_body.json").read_bytes(),
            headers={"Content-Type": "application/json", "Authorization": "local-dev-secret"},
            verify=ssl.create_default_context(cafile=repo / "data/tls/cert.pem"),
            timeout=30,
        )
        assert answer.json() == {"accepted": 1, "duplicates": 0, "rejected": 0}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for thread in pumps:  # at the end of the output now the process group is gone
            thread.join(DEADLINE)
        if proc.stdout is not None:
            proc.stdout.close()
