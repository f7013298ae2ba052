"""SQLite store plumbing: its lifecycle (migrations, the search key, the
checkpoint and index tasks), the writer process it sends every write to, with
intake first and delivery its share (:mod:`bridge.store.writer_share`), and the
per-thread read connections.

:class:`~bridge.store.sqlite.SQLiteStore` is :class:`SQLiteBase` (here) and
the Store interface's methods on top of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bridge.errors import StoreError, StoreUnavailable
from bridge.store.base import Store
from bridge.store.search import INDEXED_SETTING, SearchHasher, search_key_plan
from bridge.store.sqlite_schema import connect, migrate
from bridge.store.sqlite_search import INDEX_BATCH, index_search, reset_search_watermark
from bridge.store.sqlite_writer import WriterProcess
from bridge.store.writer_share import DELIVERY_OPS, INTAKE_OPS, WriterShare

# Erasure's WAL checkpoint: seconds between tries (see SQLiteStore._checkpoint).
CHECKPOINT_WAIT = 0.1
# Leads indexed per transaction when the store opens (the writer is not running yet).
REINDEX_CHUNK = 5000

log = logging.getLogger("lead_bridge.store")

T = TypeVar("T")


def sqlite_path(url: str) -> Path:
    """``sqlite:///relative.db`` or ``sqlite:////absolute.db`` -> a path."""
    rest = url.removeprefix("sqlite:///")
    if not rest:
        raise StoreError(f"no database file in storage url {url!r}")
    return Path(rest)


class SQLiteBase(Store):
    checkpoint_interval = 1.0
    index_interval = 1.0  # seconds between search-index batches
    index_max_lag = 30.0  # while intake keeps the writer busy, index at least this often
    dialect = "sqlite"

    def __init__(
        self, url: str, *, synchronous: str = "FULL", search_key: str | None = None
    ) -> None:
        self.path = sqlite_path(url)
        self.synchronous = synchronous
        self.search_key = search_key
        self._search_key: bytes = b""
        self._indexer: asyncio.Task[None] | None = None
        self._writer: WriterProcess | None = None
        self._restart_lock = asyncio.Lock()
        self._checkpointer: threading.Thread | None = None
        self._checkpoint_stop = threading.Event()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = True
        # Intake first, delivery its share of the one writer (see writer_share).
        self.share = WriterShare()

    # ------------------------------------------------------------------ plumbing

    def _connect(self) -> sqlite3.Connection:
        return connect(self.path, self.synchronous)

    async def open(self) -> None:
        await asyncio.to_thread(self._migrate)
        await asyncio.to_thread(self._prepare_search_index)
        self._writer = await self._spawn_writer()
        self.share = WriterShare()  # bound to this event loop
        self._indexer = asyncio.create_task(self._run_indexer(), name="sqlite-search-indexer")
        self._closed = False
        self._checkpoint_stop.clear()
        self._checkpointer = threading.Thread(
            target=self._run_checkpointer, name="sqlite-checkpointer", daemon=True
        )
        self._checkpointer.start()

    def _migrate(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = self._connect()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open SQLite database {self.path}: {exc}") from exc
        try:
            migrate(conn)
        finally:
            conn.close()

    def _prepare_search_index(self) -> None:
        """Resolve the search key (bridge/store/search.py) and rebuild the index
        if it was built with another key (or before it existed)."""
        conn = self._connect()
        try:
            key, rebuild = search_key_plan(conn, self.search_key)
            hasher = SearchHasher(key)
            if rebuild:
                conn.execute("BEGIN IMMEDIATE")
                reset_search_watermark(conn)
                conn.execute(
                    "INSERT INTO settings (name, value) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (INDEXED_SETTING, hasher.fingerprint),
                )
                conn.execute("COMMIT")
                # Every lead indexed again, from its payload, before the store opens.
                while True:
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        done = index_search(conn, REINDEX_CHUNK, hasher)
                        conn.execute("COMMIT")
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
                    if done < REINDEX_CHUNK:
                        break
                log.info("event=search_index_rebuilt backend=sqlite")
            # Otherwise what intake stored since the last batch is left to the
            # indexer (and to a search, index_now): indexing it here, parsing
            # payloads the writer kept no values for, would delay every start.
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot prepare the search index: {exc}") from exc
        finally:
            conn.close()
        self._search_key, self.search = key, hasher

    async def _spawn_writer(self) -> WriterProcess:
        """A new writer process, started and answering on the running loop."""
        writer = WriterProcess(self.path, self.synchronous)
        await asyncio.to_thread(writer.start)
        writer.attach(asyncio.get_running_loop())
        await writer.submit("set_search_key", (self._search_key,))
        return writer

    def _run_checkpointer(self) -> None:
        # Checkpoints copy the WAL into the database file and fsync it: done here
        # (SQLite releases the GIL), not inside intake's commits.
        conn = self._connect()
        try:
            while not self._checkpoint_stop.wait(self.checkpoint_interval):
                try:
                    # PASSIVE never blocks the writer nor waits for readers.
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:
                    log.warning("event=checkpoint_failed backend=sqlite error=%s", exc)
        finally:
            conn.close()

    async def _run_indexer(self) -> None:
        """Index new leads every ``index_interval``, through the writer
        (bridge/store/search.py).

        Indexing is not urgent, intake is: while the writer has requests waiting,
        a round is skipped, for at most ``index_max_lag`` seconds, and then does
        one batch only, so a sustained burst of webhooks does not share the
        writer with the index (searches stay exact: a search indexes whatever
        is left first, see :meth:`index_now`)."""
        last_done = time.monotonic()
        while True:
            await asyncio.sleep(self.index_interval)
            try:
                while True:
                    busy = self._writer_busy()
                    if busy and time.monotonic() - last_done < self.index_max_lag:
                        break
                    full = await self._write("index_search", INDEX_BATCH) == INDEX_BATCH
                    last_done = time.monotonic()
                    if not full or busy:
                        break
            except StoreError as exc:
                log.warning("event=search_index_failed backend=sqlite error=%s", exc)

    async def index_now(self) -> None:
        """Index every lead stored so far (an operator's search is about to read
        the index), one batch per writer transaction."""
        while await self._write("index_search", INDEX_BATCH) == INDEX_BATCH:
            pass

    def _writer_busy(self) -> bool:
        writer = self._writer
        return writer is not None and writer.busy

    async def close(self) -> None:
        if self._closed:
            return
        if self._indexer is not None:
            self._indexer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._indexer
            self._indexer = None
        self._closed = True
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.stop()  # after every queued write
        self._checkpoint_stop.set()
        if self._checkpointer is not None:
            await asyncio.to_thread(self._checkpointer.join)
            self._checkpointer = None
        with self._readers_lock:
            for reader in self._readers:
                reader.close()
            self._readers.clear()
        with contextlib.suppress(sqlite3.Error):
            conn = self._connect()
            try:
                # Best effort: a reader of another process pinning the WAL must not
                # hold shutdown for the connection's 30 s busy_timeout.
                conn.execute(f"PRAGMA busy_timeout={int(CHECKPOINT_WAIT * 1000)}")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()

    async def _write(self, name: str, *args: Any) -> Any:
        """Queue a write; it commits together with every write queued meanwhile.

        If the writer process died (it is logged), the next write starts a new
        one: the writes that were waiting failed with StoreUnavailable (503 for
        a webhook, so the provider sends again) and nothing committed is lost.
        """
        if name in DELIVERY_OPS:
            async with self.share.delivery():
                writer = await self._live_writer()
                return await writer.submit(name, args)
        writer = await self._live_writer()
        if name not in INTAKE_OPS:
            return await writer.submit(name, args)
        token, start = self.share.intake_started(), time.perf_counter()
        result = await writer.submit(name, args)
        self.share.intake_done(token, time.perf_counter() - start, len(result.accepted))
        return result

    async def _live_writer(self) -> WriterProcess:
        if self._closed:
            raise StoreUnavailable("the store is closed")
        writer = self._writer
        if writer is not None and writer.alive:
            return writer
        async with self._restart_lock:  # one restart for all the writes that find it dead
            if self._closed:
                raise StoreUnavailable("the store is closed")
            if self._writer is not None and self._writer.alive:
                return self._writer
            if self._writer is not None:
                await self._writer.stop(timeout=5)
            writer = await self._spawn_writer()
            log.warning("event=writer_restarted backend=sqlite pid=%s", writer.pid)
            self._writer = writer
            return writer

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreUnavailable("the store is closed")

        def run() -> T:
            try:
                return fn(self._reader())
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"read failed: {exc}") from exc

        return await asyncio.to_thread(run)

    async def ping(self) -> None:
        await self._live_writer()  # restarts a writer process that died
        await self._read(lambda c: c.execute("SELECT 1").fetchone())
