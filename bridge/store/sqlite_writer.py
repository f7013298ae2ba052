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

The child's loop and its group commit are in :mod:`bridge.store.sqlite_writer_child`,
the frames both ends exchange in :mod:`bridge.store.sqlite_frames`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import pickle
import signal
import site
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import bridge
from bridge.errors import StoreError, StoreUnavailable
from bridge.store.sqlite_frames import HEADER, FrameReader, take_frames
from bridge.store.sqlite_writer_child import STOP_SIGNALS, child_main

log = logging.getLogger("lead_bridge.store")

START_TIMEOUT = 30.0
# A writer that closed its socket is given this long to exit before it is killed.
REAP_TIMEOUT = 5.0
# Room in the socket between the parent and the writer (the kernel caps it at
# net.core.wmem_max): requests wait there while the writer commits.
SOCKET_BUFFER = 4 << 20


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
        self._outbox += (HEADER.pack(len(data)), data)
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
