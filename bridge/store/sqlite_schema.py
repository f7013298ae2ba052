"""SQLite schema and connections, shared by the store and its writer process.

A new migration also updates the current schema declared in schema.py
(tests/store/test_schema.py compares them).
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from bridge.store.base import versions_to_apply
from bridge.store.search import SearchHasher

log = logging.getLogger("lead_bridge.store")

MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE leads (
            id TEXT PRIMARY KEY,
            received_at REAL NOT NULL,
            created TEXT,
            url TEXT,
            payload TEXT,
            purged_at REAL
        )""",
        "CREATE INDEX leads_received ON leads (received_at)",
        """CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY,
            lead_id TEXT NOT NULL REFERENCES leads (id) ON DELETE CASCADE,
            destination TEXT NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            next_attempt_at REAL,
            lease_token TEXT,
            last_error TEXT,
            last_status_code INTEGER,
            remote_id TEXT,
            delivered_at REAL,
            updated_at REAL NOT NULL,
            UNIQUE (lead_id, destination)
        )""",
        # Partial index: the claim query reads only due rows of one destination, so
        # its cost does not grow with the number of delivered rows or the backlog.
        """CREATE INDEX deliveries_due ON deliveries (destination, next_attempt_at)
            WHERE status = 'pending'""",
        # No index on updated_at: every index costs each intake insert, and operator
        # listings can afford a scan in a reader thread.
        """CREATE TABLE attempts (
            id INTEGER PRIMARY KEY,
            delivery_id INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
            lead_id TEXT NOT NULL,
            destination TEXT NOT NULL,
            number INTEGER NOT NULL,
            started_at REAL NOT NULL,
            duration REAL NOT NULL,
            outcome TEXT NOT NULL,
            error TEXT,
            status_code INTEGER,
            remote_id TEXT
        )""",
        "CREATE INDEX attempts_lead ON attempts (lead_id)",
        """CREATE TABLE quarantine (
            id INTEGER PRIMARY KEY,
            received_at REAL NOT NULL,
            reason TEXT NOT NULL,
            lead_id TEXT,
            item_index INTEGER,
            raw TEXT NOT NULL
        )""",
    ],
    # 2: the operator console (see bridge/operations): search index, audit log,
    # schema drift, and indexes that serve exactly the console's queries.
    [
        # Keyed hashes of data.email / data.phone (bridge/store/search.py); partial
        # indexes, so leads without them cost nothing.
        "ALTER TABLE leads ADD COLUMN email_hash BLOB",
        "ALTER TABLE leads ADD COLUMN phone_hash BLOB",
        "CREATE INDEX leads_email_hash ON leads (email_hash) WHERE email_hash IS NOT NULL",
        "CREATE INDEX leads_phone_hash ON leads (phone_hash) WHERE phone_hash IS NOT NULL",
        "CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
        # Who (token name), what, when; never personal data.
        """CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT,
            detail TEXT
        )""",
        # Provider keys that a destination's mapping does not read.
        """CREATE TABLE unmapped_keys (
            destination TEXT NOT NULL,
            key TEXT NOT NULL,
            first_seen REAL NOT NULL,
            last_seen REAL NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (destination, key)
        )""",
        # Dead letters by destination and time (listing, preview, bulk replay).
        """CREATE INDEX deliveries_dead ON deliveries (destination, updated_at)
            WHERE status = 'dead'""",
        # Deliveries per hour (overview chart); written when a delivery finishes,
        # never on intake's path.
        """CREATE INDEX deliveries_delivered ON deliveries (destination, delivered_at)
            WHERE status = 'delivered'""",
    ],
    # 3: tombstones of erased leads: the id alone (not personal data), so the
    # provider's re-send of an erased lead is a duplicate and never stored.
    [
        """CREATE TABLE erased_leads (
            id TEXT PRIMARY KEY,
            erased_at REAL NOT NULL
        ) WITHOUT ROWID""",
    ],
    # 4: console queries at 100k leads / 300k deliveries (bench/console.py):
    # the dead and delivered indexes carry the lead id (search by status reads
    # the index alone) and skipped rows get one (counts, unrouted leads). Each
    # also holds `status`, so SQLite reads a count or a lead id from the index
    # only (it does not count a partial index's WHERE column as covered). All
    # are written when a delivery finishes, never on intake's path.
    [
        "DROP INDEX deliveries_dead",
        """CREATE INDEX deliveries_dead ON deliveries (destination, updated_at, lead_id, status)
            WHERE status = 'dead'""",
        "DROP INDEX deliveries_delivered",
        """CREATE INDEX deliveries_delivered
            ON deliveries (destination, delivered_at, lead_id, status) WHERE status = 'delivered'""",
        """CREATE INDEX deliveries_skipped ON deliveries (destination, lead_id, status)
            WHERE status = 'skipped'""",
    ],
    # 5: the search index out of intake's path. Indexes on random hashes cost
    # intake a dirty page per lead and index (measured: CPU per stored lead in
    # the writer 18 -> 51 us). Intake now only writes the hashes into the lead
    # row (sequential); the writer copies new rows' hashes into lead_search in
    # batches, sorted, behind a rowid watermark, and a search also checks the
    # rows above the watermark (bridge/store/search.py). Triggers drop a lead's
    # entries when its row is deleted (erase) or its hashes change (retention).
    [
        "DROP INDEX leads_email_hash",
        "DROP INDEX leads_phone_hash",
        """CREATE TABLE lead_search (
            hash BLOB NOT NULL,
            lead_id TEXT NOT NULL,
            PRIMARY KEY (hash, lead_id)
        ) WITHOUT ROWID""",
        """INSERT INTO settings (name, value) VALUES ('search_indexed_rowid', '0')
            ON CONFLICT (name) DO UPDATE SET value = '0'""",
        """CREATE TRIGGER leads_search_delete AFTER DELETE ON leads
            WHEN old.email_hash IS NOT NULL OR old.phone_hash IS NOT NULL
            BEGIN
                DELETE FROM lead_search WHERE hash = old.email_hash AND lead_id = old.id;
                DELETE FROM lead_search WHERE hash = old.phone_hash AND lead_id = old.id;
            END""",
        """CREATE TRIGGER leads_search_update AFTER UPDATE OF email_hash, phone_hash ON leads
            WHEN old.email_hash IS NOT NULL OR old.phone_hash IS NOT NULL
            BEGIN
                DELETE FROM lead_search WHERE hash = old.email_hash AND lead_id = old.id;
                DELETE FROM lead_search WHERE hash = old.phone_hash AND lead_id = old.id;
            END""",
    ],
]


class StoreConnection(sqlite3.Connection):
    """A connection that can carry the writer's search key (set_search_key)."""

    search_hasher: SearchHasher | None = None


def connect(path: Path | str, synchronous: str) -> sqlite3.Connection:
    """A connection with the store's settings (WAL, ``synchronous``, foreign keys)."""
    conn = sqlite3.connect(
        path,
        isolation_level=None,
        check_same_thread=False,
        timeout=30.0,
        factory=StoreConnection,
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    # Erased data must not linger in free pages (see `lead-bridge erase`).
    conn.execute("PRAGMA secure_delete=ON")
    conn.execute("PRAGMA cache_size=-65536")  # 64 MiB
    return conn


# Primary result codes that are about the database, not about one operation:
# busy or locked (another connection holds the write lock), I/O, a full disk,
# no memory, a read-only or unopenable or corrupt file.
_DATABASE_CODES = frozenset({5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 26})
_DATABASE_MESSAGES = ("database is locked", "database table is locked", "disk i/o error")


def database_unavailable(exc: BaseException) -> bool:
    """Did ``exc`` come from the database as a whole (locked, busy, I/O, full)?

    Retrying the operations of a failed batch one by one would then only wait
    out ``busy_timeout`` again for each of them: such an error fails the whole
    batch at once. Other errors (a constraint, a bad value) are about one
    operation.
    """
    if not isinstance(exc, sqlite3.Error) or isinstance(exc, sqlite3.IntegrityError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _DATABASE_CODES
    return str(exc).lower().startswith(_DATABASE_MESSAGES)


def migrate(conn: sqlite3.Connection) -> None:
    """Apply the versioned migrations this database has not seen yet."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        for version in versions_to_apply(row[0] or 0, len(MIGRATIONS)):
            for statement in MIGRATIONS[version - 1]:
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
            log.info("event=migrated backend=sqlite version=%d", version)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
