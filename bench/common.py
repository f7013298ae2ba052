"""Helpers shared by the benchmarks: free ports, child processes, wrk runs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SECRET = "bench-secret-value"  # the benchmarked service's webhook header secret


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A child process with its output in a log file; stop() is SIGTERM, then SIGKILL."""

    def __init__(
        self, args: list[str], log: Path, cwd: Path = ROOT, env: dict[str, str] | None = None
    ) -> None:
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            args, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT, env=env
        )

    def wait_http(self, url: str, timeout: float = 30) -> None:
        """Until ``url`` answers at all (any status); fails if the process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{url}: process exited with {self.proc.returncode}")
            try:
                httpx.get(url, verify=False, timeout=1)  # noqa: S501 - local self-signed cert
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise TimeoutError(url)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def run_wrk(
    url: str,
    script: str,
    seconds: int,
    connections: int,
    env: dict[str, str],
    cpus: str | None = None,
) -> dict[str, Any]:
    """One wrk run with a bench/ Lua script printing ``WRK_RESULT {json}``; adds ``rps``.
    ``cpus``: the CPUs wrk runs on (taskset's list), default any."""
    out = subprocess.run(
        [
            *(["taskset", "-c", cpus] if cpus else []),
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(HERE / script),
            url,
        ],
        env={**os.environ, "SECRET": SECRET, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRK_RESULT "))
    result: dict[str, Any] = json.loads(line.removeprefix("WRK_RESULT "))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result
