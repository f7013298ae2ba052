"""The SQLite writer process: every write of a :class:`SQLiteStore` runs here.

Why a process. SQLite releases the GIL while it works, but a writer *thread*
needs the GIL back after every statement and every returned row, and under
load the event loop holds it: each hand-over waits for a switch interval, so
commits took several times longer than SQLite needed, and webhook requests
waited for them (figures: bench/README.md, "Figures behind comments"). In its
own process the writer has its own GIL and the event loop keeps the whole of
its own. Webhook bodies go over as raw bytes (``ingest_body``, the SQLite
backend's private fast path, see :class:`bridge.intake.BodyStore`) and are
parsed here, by the writer itself, just before the commit that stores them:
the event loop, intake's bottleneck, neither parses nor pickles leads.

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

Protocol, over a socketpair: frames of a 4-byte big-endian length and a pickle.
Parent to child: ``(request_id, op_name, args)`` (``ingest``, ``ingest_body``
or a name from :data:`bridge.store.sqlite_writes.OPS`). Child to parent: first ``("ready",
pid)`` or ``("failed", message)``, then, per commit, a list of ``(request_id,
result, error)`` with errors as ``(unavailable, message)``. When the parent
closes its end (or dies) the child commits what it has received and exits.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import pickle
import signal
import site
import socket
import sqlite3
import struct
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import bridge
from bridge.errors import StoreError, StoreUnavailable
from bridge.store.sqlite_ingest import Ingest, prepare_body, run_ingests
from bridge.store.sqlite_schema import connect, database_unavailable
from bridge.store.sqlite_writes import INGESTS, OPS

log = logging.getLogger("lead_bridge.store")

# Claims and outcomes committed per transaction, between intake's commits.
ENGINE_CHUNK = 32
# Webhook requests committed (and answered) together at most; see GroupCommit.
INTAKE_CHUNK = 24
# The same when the writer has a single CPU (see intake_chunk).
ONE_CPU_CHUNK = 256
# cgroup v2: "QUOTA PERIOD" or "max PERIOD" (a container given --cpus=1).
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
# Frames, and bytes, taken from the socket at a time at most (about: reading
# stops once either is reached); the rest waits in the socket.
MAX_FRAMES = 2000
MAX_READ_BYTES = 8 << 20
START_TIMEOUT = 30.0
# A writer that closed its socket is given this long to exit before it is killed.
REAP_TIMEOUT = 5.0
# Room in the socket between the parent and the writer (the kernel caps it at
# net.core.wmem_max): requests wait there while the writer commits.
SOCKET_BUFFER = 4 << 20

_HEADER = struct.Struct(">I")

Request = tuple[int, str, tuple[Any, ...]]
Answer = tuple[int, Any, tuple[bool, str] | None]  # error: (unavailable, message)


def send_frame(sock: socket.socket, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_HEADER.pack(len(data)) + data)


def take_frames(buffer: bytearray) -> list[Any]:
    """Remove and return the complete frames at the start of ``buffer``."""
    frames, pos = [], 0
    while len(buffer) - pos >= 4:
        (size,) = _HEADER.unpack_from(buffer, pos)
        if len(buffer) - pos - 4 < size:
            break
        # A private socketpair between this process and its own child.
        frames.append(pickle.loads(buffer[pos + 4 : pos + 4 + size]))  # noqa: S301
        pos += 4 + size
    if pos:
        del buffer[:pos]
    return frames


class FrameReader:
    """Reads length-prefixed pickles from a blocking socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def read(self) -> list[Any] | None:
        """At least one frame (all complete ones received), or None at end of stream."""
        while not (frames := take_frames(self.buffer)):
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                return None
            self.buffer += chunk
        return frames

    def read_available(self, wait: bool) -> list[Any] | None:
        """The complete frames that have arrived (up to about MAX_FRAMES or
        MAX_READ_BYTES), waiting for one first if ``wait``; None once the
        stream has ended and no frame is left."""
        frames: list[Any] = []
        read = 0
        while len(frames) < MAX_FRAMES and read < MAX_READ_BYTES:
            try:
                chunk = self.sock.recv(1 << 20, 0 if wait and not frames else socket.MSG_DONTWAIT)
            except BlockingIOError:
                return frames
            if not chunk:
                return frames or None
            read += len(chunk)
            self.buffer += chunk
            frames += take_frames(self.buffer)
        return frames


# --------------------------------------------------------------------------- child


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


# --------------------------------------------------------------------------- parent


def _site_dirs() -> set[str]:
    dirs = [*site.getsitepackages(), site.getusersitepackages()]
    return {str(Path(d).resolve()) for d in dirs}


def _error(error: tuple[bool, str]) -> StoreError:
    unavailable, message = error
    return StoreUnavailable(message) if unavailable else StoreError(message)


class WriterProcess:
    """The parent's handle on one writer process, bound to one event loop.

    Requests go out in one send per turn of the loop; answers are read by the
    loop itself (``add_reader``) and settle their futures at once: no thread in
    between, so no wait for the GIL or a second wake-up on a webhook's way
    back. If the process dies, every waiting write fails with StoreUnavailable
    (none of them was answered, so none was acknowledged) and ``alive`` turns
    false.

    Not :mod:`bridge.groupcommit`, on purpose: this side pipelines, it does not
    batch. The writer process group-commits (:class:`GroupCommit`, a blocking
    loop with no event loop to run the primitive) and answers each chunk once
    it is durable, while this side keeps sending. The primitive in front (one
    batch out at a time, answered when all of it is) idles the writer while
    the loop answers and sends, and costs a second future per request on the
    event loop: measured more CPU per request and no gain (bench/README.md).
    """

    def __init__(self, path: Path, synchronous: str) -> None:
        self.path = path
        self.synchronous = synchronous
        self.alive = False
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count()
        self._inbox = bytearray()
        self._outbox: list[bytes] = []
        self._flush_scheduled = False
        self._stopping = False
        self._reaper: asyncio.Future[None] | None = None

    @property
    def busy(self) -> bool:
        """Requests are waiting for their answer."""
        return bool(self._pending)

    def start(self) -> None:
        """Spawn the process and wait until its database is open (blocking:
        run it in a thread, then :meth:`attach` on the loop)."""
        parent, child = socket.socketpair()
        for end, option in ((parent, socket.SO_SNDBUF), (child, socket.SO_RCVBUF)):
            end.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        env = dict(os.environ)
        root = str(Path(bridge.__file__).resolve().parent.parent)
        if root not in _site_dirs():
            # A source checkout: the child imports this package from the same place.
            env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        # Started with SIGTERM and SIGINT blocked (the mask is inherited), so
        # they cannot end it before it ignores them (ignore_stop_signals).
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bridge.store.sqlite_writer",
                    str(child.fileno()),
                    str(self.path.absolute()),
                    self.synchronous,
                ],
                pass_fds=[child.fileno()],
                stdin=subprocess.DEVNULL,
                env=env,
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            child.close()
        reader = FrameReader(parent)
        parent.settimeout(START_TIMEOUT)
        try:
            frames = reader.read()
        except OSError as exc:
            frames = None
            detail = str(exc)
        else:
            detail = f"it exited with status {proc.poll()}"
        if not frames or frames[0][0] != "ready":
            parent.close()
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()
            message = (
                frames[0][1] if frames else f"the SQLite writer process did not start: {detail}"
            )
            raise StoreUnavailable(message)
        parent.setblocking(False)
        self._sock, self._proc, self._inbox = parent, proc, reader.buffer

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Read answers on ``loop``; writes must come from that loop from now on."""
        assert self._sock is not None
        self._loop = loop
        loop.add_reader(self._sock.fileno(), self._on_readable)
        self.alive = True

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def submit(self, name: str, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        """Queue one operation; its future settles after the commit.

        Frames queued during one turn of the event loop go out in one send at
        the start of the next (one system call and one wake-up of the writer for
        a whole burst of webhook requests, not one each).
        """
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            raise StoreError("a SQLite store must be used from the event loop that opened it")
        if not self.alive:
            raise StoreUnavailable("the SQLite writer process is not running")
        future: asyncio.Future[Any] = loop.create_future()
        rid = next(self._ids)
        self._pending[rid] = future
        data = pickle.dumps((rid, name, args), protocol=pickle.HIGHEST_PROTOCOL)
        self._outbox += (_HEADER.pack(len(data)), data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._flush_scheduled = False
        frames, self._outbox = self._outbox, []
        if not frames or self._sock is None or not self.alive:
            return
        data = b"".join(frames)
        try:
            sent = self._sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            log.error("event=writer_send_failed backend=sqlite error=%s", exc)
            self._gone()
            return
        if sent < len(data):
            # The writer reads all the time, so its socket buffer fills only
            # while it is stuck (a locked database): the rest waits for room.
            self._outbox.insert(0, data[sent:])
            assert self._loop is not None
            self._loop.add_writer(self._sock.fileno(), self._writable)

    def _writable(self) -> None:
        assert self._loop is not None and self._sock is not None
        self._loop.remove_writer(self._sock.fileno())
        self._flush()

    def _on_readable(self) -> None:
        sock, inbox = self._sock, self._inbox
        assert sock is not None
        eof = False
        while True:
            try:
                chunk = sock.recv(1 << 20)
            except BlockingIOError:
                break
            except OSError:
                eof = True
                break
            if not chunk:
                eof = True
                break
            inbox += chunk
        pending = self._pending
        for answers in take_frames(inbox):
            for rid, result, error in answers:
                future = pending.pop(rid)
                if future.done():  # the caller was cancelled; the write happened anyway
                    continue
                if error is None:
                    future.set_result(result)
                else:
                    future.set_exception(_error(error))
        if eof:
            self._gone()

    def _gone(self) -> None:
        """The process exited (or its socket broke): fail whatever still waits."""
        if self._loop is not None and self._sock is not None and self.alive:
            self._loop.remove_reader(self._sock.fileno())
            if self._outbox:
                self._loop.remove_writer(self._sock.fileno())
        self.alive = False
        if not self._stopping and self._reaper is None:
            # It closed its socket, so it is exiting: reaped in a thread, as
            # waiting for it here would stop the event loop meanwhile.
            self._reaper = asyncio.ensure_future(self._reap())
        orphans, self._pending = self._pending, {}
        for future in orphans.values():
            if not future.done():
                future.set_exception(
                    StoreUnavailable("the SQLite writer process exited before committing")
                )

    async def _reap(self) -> None:
        proc = self._proc
        status = None
        if proc is not None:
            status = proc.poll()
            if status is None:
                status = await asyncio.to_thread(_wait_or_kill, proc, REAP_TIMEOUT)
        log.error("event=writer_exited backend=sqlite status=%s", status)

    async def stop(self, timeout: float = 60.0) -> None:
        """Let the process commit what it was sent and answer, then reap it."""
        self._stopping = True
        self._flush()
        sock, proc = self._sock, self._proc
        if sock is not None and self.alive:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)  # the child finishes, answers, exits
        if proc is not None:
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout)
            except TimeoutError:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        if sock is not None:
            if self.alive:
                self._on_readable()  # the last answers, then the end
            self._gone()
            sock.close()
            self._sock = None
        if self._reaper is not None:
            await self._reaper


def _wait_or_kill(proc: subprocess.Popen[bytes], timeout: float) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


if __name__ == "__main__":
    raise SystemExit(child_main(sys.argv[1:]))
