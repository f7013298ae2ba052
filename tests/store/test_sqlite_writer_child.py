"""The writer process's loop, on a plain connection (bridge/store/sqlite_writer_child.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bridge.store.base import LeadIn


def lead(lead_id: str) -> LeadIn:
    return LeadIn(id=lead_id, payload=f'{{"id":"{lead_id}"}}')


def test_the_writer_enforces_foreign_keys_after_intake_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    from bridge.store import sqlite_writes
    from bridge.store.sqlite_schema import connect, migrate
    from bridge.store.sqlite_writer_child import GroupCommit

    conn = connect(tmp_path / "fk.db", "FULL")
    migrate(conn)
    monkeypatch.setitem(
        sqlite_writes.OPS, "fk_state", lambda c: c.execute("PRAGMA foreign_keys").fetchone()[0]
    )

    def orphan(c: sqlite3.Connection) -> None:
        c.execute(
            "INSERT INTO deliveries (lead_id, destination, status, created_at, updated_at) "
            "VALUES ('no-such-lead', 'crm', 'pending', 0, 0)"
        )

    monkeypatch.setitem(sqlite_writes.OPS, "orphan", orphan)
    answers: list[list[object]] = []
    writer = GroupCommit(conn, answers.append)
    ingest = (1, "ingest", (sqlite_writes.lead_rows([lead("a")], 0.0), ("crm",), [], 0.0))
    writer.commit_and_answer([ingest])
    writer.commit_and_answer([(2, "fk_state", ()), (3, "orphan", ())])
    [[(_, stored, no_error)], [(_, fk_state, _), (_, _, error)]] = answers  # type: ignore[misc]
    assert no_error is None and stored.accepted == ["a"]  # type: ignore[attr-defined]
    assert fk_state == 1
    assert error is not None and "FOREIGN KEY" in error[1]  # type: ignore[index]
    assert conn.execute("SELECT count(*) FROM deliveries").fetchone() == (1,)
    conn.close()


@pytest.mark.parametrize("cpus", [1.0, 2.0])
def test_webhook_requests_are_committed_and_answered_in_chunks(tmp_path: Path, cpus: float) -> None:
    from bridge.store import sqlite_writes
    from bridge.store.sqlite_schema import connect, migrate
    from bridge.store.sqlite_writer_child import GroupCommit, intake_chunk

    chunk = intake_chunk(cpus)

    class Arrived:
        """Everything at once, then the end of the stream."""

        def __init__(self, frames: list[object]) -> None:
            self.batches: list[list[object] | None] = [frames, None]

        def read_available(self, wait: bool) -> list[object] | None:
            return self.batches.pop(0)

    conn = connect(tmp_path / "chunks.db", "FULL")
    migrate(conn)
    count = 2 * chunk + 2
    frames: list[object] = [
        (rid, "ingest", (sqlite_writes.lead_rows([lead(f"l{rid}")], 0.0), ("crm",), [], 0.0))
        for rid in range(count)
    ]
    answers: list[list[tuple[int, object, object]]] = []
    GroupCommit(conn, answers.append, chunk).run(Arrived(frames))  # type: ignore[arg-type]
    # One commit and one answer per chunk, so the first ones go out while the rest commit.
    assert [len(a) for a in answers] == [chunk, chunk, 2]
    assert [rid for a in answers for rid, _, _ in a] == list(range(count))
    assert all(error is None for a in answers for _, _, error in a)
    assert conn.execute("SELECT count(*) FROM leads").fetchone() == (count,)
    conn.close()


def test_a_locked_database_fails_the_whole_batch_after_one_wait(tmp_path: Path) -> None:
    """Lock, busy and I/O errors are about the database, not one operation:
    retrying each operation alone would wait out busy_timeout once per operation."""
    import sqlite3

    from bridge.store import sqlite_writes
    from bridge.store.sqlite_schema import connect, migrate
    from bridge.store.sqlite_writer_child import GroupCommit

    conn = connect(tmp_path / "locked.db", "FULL")
    migrate(conn)
    conn.execute("PRAGMA busy_timeout=50")
    begins: list[str] = []
    conn.set_trace_callback(lambda sql: begins.append(sql) if sql.startswith("BEGIN") else None)
    holder = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    answers: list[list[tuple[int, object, tuple[bool, str] | None]]] = []
    writer = GroupCommit(conn, answers.append)
    ingests = [
        (rid, "ingest", (sqlite_writes.lead_rows([lead(f"l{rid}")], 0.0), ("crm",), [], 0.0))
        for rid in range(5)
    ]
    writer.commit_and_answer(ingests)  # type: ignore[arg-type]
    writer.commit_and_answer([(10, "noop", ()), (11, "noop", ()), (12, "noop", ())])
    holder.rollback()
    holder.close()
    assert len(begins) == 2  # one wait per batch, not one per operation
    errors = [error for batch in answers for _, _, error in batch]
    assert len(errors) == 8
    assert all(e is not None and e[0] and "database is locked" in e[1] for e in errors)
    # Errors about one operation still fail only that operation (isolation).
    writer.commit_and_answer([(20, "noop", ()), (21, "fail", ("bad op",)), (22, "noop", ())])
    assert [(rid, error) for rid, _, error in answers[-1]] == [
        (20, None),
        (21, (False, "bad op")),
        (22, None),
    ]
    conn.close()


def test_a_single_cpu_commits_larger_chunks(tmp_path: Path) -> None:
    from bridge.store.sqlite_writer_child import (
        INTAKE_CHUNK,
        ONE_CPU_CHUNK,
        intake_chunk,
        usable_cpus,
    )

    assert intake_chunk(2.0) == intake_chunk(8.0) == INTAKE_CHUNK
    assert intake_chunk(1.0) == intake_chunk(1.5) == ONE_CPU_CHUNK > INTAKE_CHUNK
    affinity = float(len(os.sched_getaffinity(0)))
    cpu_max = tmp_path / "cpu.max"
    assert usable_cpus(cpu_max) == affinity  # no cgroup file
    cpu_max.write_text("max 100000\n")
    assert usable_cpus(cpu_max) == affinity
    cpu_max.write_text("100000 100000\n")  # a container given one CPU
    assert usable_cpus(cpu_max) == min(affinity, 1.0)
    cpu_max.write_text("not a quota\n")
    assert usable_cpus(cpu_max) == affinity
