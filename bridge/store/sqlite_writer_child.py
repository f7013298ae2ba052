"""The SQLite writer process's side: its loop, which group-commits what the
store sends (:class:`bridge.store.sqlite_writer.WriterProcess` starts it).

Why one thread. The process does everything in one thread: read the socket,
parse, write, answer. A second thread that read and parsed while the writer
committed ran into the same GIL hand-overs at every SQLite call, and on two
cores shared with the event loop and the load generator one thread less was
worth more than the overlap (measured in paired runs). While the
writer commits, new requests wait in the socket's buffer (4 MiB; beyond that
in the parent's outbox, see ``WriterProcess._flush``; intake bounds the
bytes in flight, see :mod:`bridge.intake`).

Group commit. The writer takes everything that arrived since its last commit
and commits it in a few transactions (``synchronous=FULL`` costs an fsync per
commit, so batching concurrent requests is what makes durable intake fast):
intake's ``ingest`` operations first and apart, sharing statements, up to
``INTAKE_CHUNK`` requests a commit (more on a single CPU, see
:func:`intake_chunk`), then at most ``ENGINE_CHUNK`` other operations (claims,
outcomes) in another transaction, so a webhook's 200 never waits behind a large batch of delivery
work. If a batch fails because of one operation (a constraint, a bad value),
its operations are retried one per transaction, so that operation does not fail
its neighbours; if the database itself fails (locked, busy, I/O), the whole
batch fails at once (:func:`~bridge.store.sqlite_schema.database_unavailable`).

Lifetime. The child ignores SIGTERM and SIGINT: a service stopped by a signal
to its whole process group (systemd, ``kill -TERM -PGID``, Ctrl-C) drains its
queued requests through the writer before it closes the channel, and the
writer exits then.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import socket
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bridge.errors import StoreError, StoreUnavailable
from bridge.store.sqlite_frames import Answer, FrameReader, Request, send_frame
from bridge.store.sqlite_ingest import Ingest, prepare_body, run_ingests
from bridge.store.sqlite_schema import connect, database_unavailable
from bridge.store.sqlite_writes import INGESTS, OPS

# Claims and outcomes committed per transaction, between intake's commits.
ENGINE_CHUNK = 32
# Webhook requests committed (and answered) together at most; see GroupCommit.
INTAKE_CHUNK = 24
# The same when the writer has a single CPU (see intake_chunk).
ONE_CPU_CHUNK = 256
# cgroup v2: "QUOTA PERIOD" or "max PERIOD" (a container given --cpus=1).
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


class GroupCommit:
    """The writer loop of the child process.

    Webhook requests go in commits of at most INTAKE_CHUNK, each answered as
    soon as it is durable: under load the event loop then sends the first
    chunk's responses (and reads the next requests) while the writer commits
    the next chunk, instead of the two taking turns over one large batch, which
    left the writer idle while the loop worked through it (the cap was chosen
    in paired runs: bench/README.md, "Figures behind comments"). Each chunk
    costs an fsync, so at low concurrency nothing changes: batches are smaller
    than the cap anyway.
    ``chunk`` is that cap (:func:`intake_chunk`).
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        answer: Callable[[list[Answer]], None],
        chunk: int = INTAKE_CHUNK,
    ) -> None:
        self.conn = conn
        self.answer = answer
        self.chunk = chunk

    def run(self, reader: FrameReader) -> None:
        """Until the parent's end of the socket closes and everything received
        before is committed and answered."""
        others: collections.deque[Request] = collections.deque()
        ended = False
        while True:
            ingests: list[Request] = []
            frames = reader.read_available(wait=not others and not ended)
            if frames is None:
                ended, frames = True, []
            for request in frames:
                (ingests if request[1] in INGESTS else others).append(request)
            chunk = self.chunk
            for start in range(0, len(ingests), chunk):
                self.commit_and_answer([_prepare(r) for r in ingests[start : start + chunk]])
            if others:
                self.commit_and_answer(
                    [others.popleft() for _ in range(min(ENGINE_CHUNK, len(others)))]
                )
            if ended and not others:
                return

    def commit_and_answer(self, batch: list[Request]) -> None:
        try:
            outcomes = self.execute(batch)
        except BaseException as exc:  # nothing was committed
            outcomes = [(None, (True, f"commit failed: {exc}"))] * len(batch)
        self.answer(
            [
                (rid, result, error)
                for (rid, _, _), (result, error) in zip(batch, outcomes, strict=True)
            ]
        )

    def execute(self, batch: Sequence[Request]) -> list[tuple[Any, tuple[bool, str] | None]]:
        """One transaction for the whole batch; on failure, one per operation."""
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            if batch[0][1] in INGESTS:  # a batch of intake's writes only (see run)
                ingests = [_ingest(name, args) for _, name, args in batch]
                stored = run_ingests(conn, ingests)
                results: list[Any] = [i.answer(r) for i, r in zip(ingests, stored, strict=True)]
            else:
                results = [OPS[name](conn, *args) for _, name, args in batch]
            conn.execute("COMMIT")
        except Exception as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if database_unavailable(exc):
                # Locked, busy, I/O: every operation would fail (or wait out
                # busy_timeout) again, so the whole batch fails at once.
                return [(None, (True, f"commit failed: {exc}"))] * len(batch)
            if len(batch) > 1:
                # Find the culprit: one transaction per operation, so one failing
                # operation does not fail its neighbours.
                return [self.execute([request])[0] for request in batch]
            if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError) and not isinstance(
                exc, sqlite3.IntegrityError
            ):
                return [(None, (True, f"commit failed: {exc}"))]
            if isinstance(exc, StoreError):
                return [(None, (isinstance(exc, StoreUnavailable), str(exc)))]
            return [(None, (False, f"{type(exc).__name__}: {exc}"))]
        return [(result, None) for result in results]


def _ingest(name: str, args: tuple[Any, ...]) -> Ingest:
    # "ingest_body" arrives prepared (see _prepare).
    return args[0] if name == "ingest_body" else Ingest(*args)  # type: ignore[no-any-return]


def _prepare(request: Request) -> Request:
    """A raw webhook body parsed, just before the commit that stores it."""
    rid, name, args = request
    if name != "ingest_body":
        return request
    try:
        body, destinations, now = args
        return rid, name, (prepare_body(body, destinations, now),)
    except Exception as exc:  # a bug: fail this request only
        return rid, "fail", (f"{type(exc).__name__}: {exc}",)


def usable_cpus(cgroup: Path = CGROUP_CPU_MAX) -> float:
    """The CPUs this process may use: its affinity (taskset, a cpuset), capped
    by a cgroup v2 CPU quota if one is set."""
    cpus = float(len(os.sched_getaffinity(0)))
    try:
        quota, period = cgroup.read_text().split()
        if quota != "max":
            cpus = min(cpus, int(quota) / int(period))
    except (OSError, ValueError):
        pass
    return cpus


def intake_chunk(cpus: float) -> int:
    """Webhook requests per commit at most. Chunks pay off when the event loop
    answers one chunk on another CPU while the writer commits the next; on a
    single CPU the two only take turns, and every chunk is one more commit and
    fsync (bench/README.md, "Fourth session": CPU per request on one core)."""
    return INTAKE_CHUNK if cpus > 1.5 else ONE_CPU_CHUNK


# The signals a whole process group gets when the service is stopped; the parent
# handles them and then closes the writer's channel.
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


def ignore_stop_signals() -> None:
    """Ignore SIGTERM and SIGINT, then take them off the blocked mask the parent
    started this process with (a signal that came in between is discarded)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def child_main(argv: Sequence[str]) -> int:
    """``python -m bridge.store.sqlite_writer FD PATH SYNCHRONOUS``"""
    fd, path, synchronous = argv
    ignore_stop_signals()
    sock = socket.socket(fileno=int(fd))
    try:
        conn = connect(path, synchronous)
        # Checkpoints run in the store's background thread, not inside commits.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        # Statement journals (a multi-row INSERT's undo log) in memory: past 64 KiB
        # SQLite spills them to a temporary file, created and deleted every few
        # commits, with page images of leads in it.
        conn.execute("PRAGMA temp_store=MEMORY")
    except sqlite3.Error as exc:
        send_frame(sock, ("failed", f"cannot open SQLite database {path}: {exc}"))
        return 1
    send_frame(sock, ("ready", os.getpid()))
    try:
        GroupCommit(
            conn, lambda answers: send_frame(sock, answers), intake_chunk(usable_cpus())
        ).run(FrameReader(sock))
    except OSError:  # the parent is gone: nobody waits for answers any more
        return 0
    finally:
        conn.close()
    return 0
