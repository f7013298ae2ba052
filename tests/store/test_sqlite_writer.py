"""The SQLite writer process: crashes, restarts, shutdown, and its parent's death."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.errors import StoreError, StoreUnavailable
from bridge.store.base import LeadIn
from bridge.store.sqlite import SQLiteStore
from bridge.store.sqlite_writer import WriterProcess
from tests.waiting import DEADLINE

ROOT = Path(__file__).resolve().parents[2]


def lead(lead_id: str) -> LeadIn:
    return LeadIn(id=lead_id, payload=f'{{"id":"{lead_id}"}}')


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "Z"


async def wait_for(condition: object, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.01)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(f"sqlite:///{tmp_path / 'w.db'}")
    await s.open()
    yield s
    await s.close()


def writer_of(store: SQLiteStore) -> WriterProcess:
    writer = store._writer
    assert writer is not None and writer.pid is not None
    return writer


async def stored_ids(store: SQLiteStore) -> list[str]:
    return await store._read(
        lambda c: [r[0] for r in c.execute("SELECT id FROM leads ORDER BY id")]
    )


async def test_writes_run_in_a_child_process(store: SQLiteStore) -> None:
    writer = writer_of(store)
    assert writer.pid != os.getpid()
    result = await store.ingest([lead("a"), lead("b"), lead("a")], ["crm"], [], 1.0)
    assert result.accepted == ["a", "b"] and result.duplicates == ["a"]
    assert await stored_ids(store) == ["a", "b"]


async def test_concurrent_requests_share_commits_and_keep_their_own_answers(
    store: SQLiteStore,
) -> None:
    results = await asyncio.gather(
        *(store.ingest([lead(f"l{i % 50}")], ["crm"], [], 1.0) for i in range(200))
    )
    accepted = [r.accepted[0] for r in results if r.accepted]
    assert sorted(accepted) == sorted(f"l{i}" for i in range(50))  # each id accepted once
    assert sum(len(r.duplicates) for r in results) == 150
    status = await store.status(2.0)
    assert status.leads == 50
    assert status.destinations[0].counts["pending"] == 50


async def test_a_killed_writer_fails_waiting_writes_and_the_next_write_restarts_it(
    store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    await store.ingest([lead("before")], ["crm"], [], 1.0)
    old = writer_of(store)
    assert old.pid is not None
    os.kill(old.pid, signal.SIGSTOP)  # holds the write below unanswered
    waiting = asyncio.ensure_future(store.ingest([lead("lost")], ["crm"], [], 1.0))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    with caplog.at_level(logging.WARNING, logger="lead_bridge.store"):
        os.kill(old.pid, signal.SIGKILL)
        with pytest.raises(StoreUnavailable, match="exited before committing"):
            await waiting  # never acknowledged, so the provider sends it again
        await wait_for(lambda: not old.alive)
        result = await store.ingest([lead("after"), lead("lost")], ["crm"], [], 2.0)
    assert result.accepted == ["after", "lost"]
    assert writer_of(store).pid != old.pid
    assert await stored_ids(store) == ["after", "before", "lost"]
    assert "event=writer_exited backend=sqlite status=-9" in caplog.text
    assert "event=writer_restarted backend=sqlite" in caplog.text


async def test_a_stuck_writer_never_blocks_the_event_loop(store: SQLiteStore) -> None:
    pid = writer_of(store).pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # like a writer waiting on a locked database
    try:
        big = "x" * 100_000
        writes = [
            asyncio.ensure_future(store.ingest([LeadIn(f"big{i}", big)], ["crm"], [], 1.0))
            for i in range(200)  # 20 MB: far more than the socket buffer holds
        ]
        # The loop kept turning: a blocking send to the stopped writer would
        # never return (generous bound: the machine may be busy).
        started = time.monotonic()
        await asyncio.sleep(0.05)
        assert time.monotonic() - started < 30.0
        assert not any(w.done() for w in writes)
    finally:
        os.kill(pid, signal.SIGCONT)
    results = await asyncio.gather(*writes)
    assert all(len(r.accepted) == 1 for r in results)
    assert len(await stored_ids(store)) == 200


async def test_a_store_is_used_from_the_loop_that_opened_it(store: SQLiteStore) -> None:
    def elsewhere() -> None:
        asyncio.run(store.ingest([lead("x")], [], [], 1.0))

    with pytest.raises(StoreError, match="event loop that opened it"):
        await asyncio.to_thread(elsewhere)


async def test_readiness_check_restarts_a_dead_writer(store: SQLiteStore) -> None:
    old = writer_of(store)
    assert old.pid is not None
    os.kill(old.pid, signal.SIGKILL)
    await wait_for(lambda: not old.alive)
    await store.ping()
    assert writer_of(store).alive and writer_of(store).pid != old.pid


async def test_close_commits_everything_sent_before_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    store = SQLiteStore(url)
    await store.open()
    pid = writer_of(store).pid
    writes = [asyncio.ensure_future(store.ingest([lead(f"x{i}")], [], [], 1.0)) for i in range(100)]
    await asyncio.sleep(0)  # queued, not yet answered
    await store.close()
    assert all(w.done() and not w.exception() for w in writes)
    assert pid is not None and gone(pid)
    again = SQLiteStore(url)
    await again.open()
    try:
        assert len(await stored_ids(again)) == 100
    finally:
        await again.close()


async def test_writes_after_close_are_refused(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path / 'd.db'}")
    await store.open()
    await store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        await store.ingest([lead("late")], [], [], 1.0)


async def test_an_unopenable_database_fails_open_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()  # a directory where the database file should be
    store = SQLiteStore(f"sqlite:///{tmp_path / 'dir.db'}")
    with pytest.raises(StoreUnavailable, match="cannot open SQLite database"):
        await store.open()


def test_the_writer_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from bridge.store.sqlite import SQLiteStore

        async def main():
            store = SQLiteStore("sqlite:///{tmp_path / "p.db"}")
            await store.open()
            print(store._writer.pid, flush=True)
            await asyncio.sleep(60)

        asyncio.run(main())
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as parent:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        assert not gone(pid)
        parent.kill()
    deadline = time.monotonic() + DEADLINE
    while not gone(pid):
        assert time.monotonic() < deadline, "the writer outlived its parent"
        time.sleep(0.02)


async def test_a_dead_writer_is_reaped_off_the_event_loop(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The writer's socket breaks while its process lives on: waiting for the
    process must not stop the event loop."""
    import threading

    writer = writer_of(store)
    proc = writer._proc
    assert proc is not None and writer._sock is not None
    waits: list[tuple[threading.Thread, float | None]] = []
    real_wait = proc.wait

    def wait(timeout: float | None = None) -> int:
        waits.append((threading.current_thread(), timeout))
        return real_wait(timeout)

    monkeypatch.setattr(proc, "wait", wait)
    os.kill(proc.pid, signal.SIGSTOP)  # alive, but will not exit by itself
    with caplog.at_level(logging.ERROR, logger="lead_bridge.store"):
        writer._sock.shutdown(socket.SHUT_RDWR)  # the channel breaks
        await wait_for(lambda: not writer.alive)
        assert all(thread is not threading.main_thread() for thread, _ in waits)
        os.kill(proc.pid, signal.SIGKILL)
        await wait_for(lambda: "event=writer_exited" in caplog.text)
    assert waits and all(thread is not threading.main_thread() for thread, _ in waits)
    result = await store.ingest([lead("after")], ["crm"], [], 2.0)  # a new writer
    assert result.accepted == ["after"]
