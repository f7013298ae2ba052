"""Stopping `lead-bridge serve` with a signal to its whole process group (systemd's
default kill mode, `kill -TERM -PGID`, Ctrl-C): requests it already read are
committed and answered 200, not 503."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.processes import free_port
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

REQUESTS = 8


def read_by_server(port: int, connections: int) -> bool:
    """Are there ``connections`` established connections to ``port``, each with
    nothing left unread in its receive queue (the service read every request)?"""
    unread = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        _, local, _, state, queues, *_ = line.split()
        if state == "01" and int(local.split(":")[1], 16) == port:
            unread.append(int(queues.split(":")[1], 16))
    return len(unread) == connections and not any(unread)


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():  # started from any thread
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    port = free_port()
    db = tmp_path / "bridge.db"
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server": {"host": "127.0.0.1", "port": port, "behind_proxy": True},
                "storage": {"url": f"sqlite:///{db}"},
            }
        )
    )
    with (tmp_path / "serve.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "serve", "--config", str(config)],
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as under systemd
        )
    try:
        yield proc, port, db
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_sigterm_to_the_process_group_answers_queued_requests_with_200(
    serve: tuple[subprocess.Popen[bytes], int, Path], tmp_path: Path
) -> None:
    proc, port, db = serve
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        try:
            return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, "the service to be ready")
    [writer] = children(proc.pid)
    # Another connection holds the write lock: the requests below queue up in
    # the service (and its writer) until the lock is released.
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    bodies = [
        f'[{{"id":"led_term_{i}","data":{{"note":"{"n" * 4000}"}}}}]'.encode()
        for i in range(REQUESTS)
    ]
    statuses: list[int] = []

    def post(body: bytes) -> None:
        response = httpx.post(
            f"{base}/lead/webhook",
            content=body,
            headers={"content-type": "application/json"},
            timeout=60,
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=post, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: read_by_server(port, REQUESTS), "the service to read the requests")
        os.killpg(proc.pid, signal.SIGTERM)  # every process of the service at once
    finally:
        holder.rollback()
        holder.close()
    for thread in threads:
        thread.join(60)
    assert proc.wait(60) == 0, (tmp_path / "serve.log").read_text()
    assert statuses == [200] * REQUESTS, (tmp_path / "serve.log").read_text()
    log = (tmp_path / "serve.log").read_text()
    assert "writer_exited" not in log
    with pytest.raises(ProcessLookupError):
        os.kill(writer, 0)
    conn = sqlite3.connect(db)
    try:
        stored = {row[0] for row in conn.execute("SELECT id FROM leads")}
    finally:
        conn.close()
    assert stored == {f"led_term_{i}" for i in range(REQUESTS)}
