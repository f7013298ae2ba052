"""The current schema, declared once for both SQL backends.

Each backend keeps its own migration history (sqlite_schema.MIGRATIONS,
postgres_schema.MIGRATIONS: landed migrations are never edited); this module
says what those histories must add up to today, table by table, with every
difference between the dialects named in one place (:data:`ONLY`).
tests/store/test_schema.py migrates a fresh database of each backend and
compares what it finds with :func:`expected`. A new migration therefore
updates this declaration too, and a change made to one backend only has to be
named here as a difference.
"""

from __future__ import annotations

from typing import Literal

Dialect = Literal["sqlite", "postgresql"]

# Logical column types and how each dialect spells them (as its catalog reports
# them: SQLite's declared type, PostgreSQL's data_type).
TYPES: dict[str, dict[Dialect, str]] = {
    "text": {"sqlite": "TEXT", "postgresql": "text"},
    "real": {"sqlite": "REAL", "postgresql": "double precision"},
    "int": {"sqlite": "INTEGER", "postgresql": "integer"},
    # row ids: SQLite's INTEGER PRIMARY KEY (the rowid), PostgreSQL's identity
    "id": {"sqlite": "INTEGER", "postgresql": "bigint"},
    "count": {"sqlite": "INTEGER", "postgresql": "bigint"},
    "bytes": {"sqlite": "BLOB", "postgresql": "bytea"},
}

# table -> (column, logical type, NOT NULL), in the tables' column order.
Columns = tuple[tuple[str, str, bool], ...]
TABLES: dict[str, Columns] = {
    "leads": (
        ("id", "text", True),
        ("received_at", "real", True),
        ("created", "text", False),
        ("url", "text", False),
        ("payload", "text", False),
        ("purged_at", "real", False),
        ("email_hash", "bytes", False),
        ("phone_hash", "bytes", False),
    ),
    "deliveries": (
        ("id", "id", True),
        ("lead_id", "text", True),
        ("destination", "text", True),
        ("status", "text", True),
        ("attempts", "int", True),
        ("created_at", "real", True),
        ("next_attempt_at", "real", False),
        ("lease_token", "text", False),
        ("last_error", "text", False),
        ("last_status_code", "int", False),
        ("remote_id", "text", False),
        ("delivered_at", "real", False),
        ("updated_at", "real", True),
        ("lease_expires_at", "real", False),
    ),
    "attempts": (
        ("id", "id", True),
        ("delivery_id", "id", True),
        ("lead_id", "text", True),
        ("destination", "text", True),
        ("number", "int", True),
        ("started_at", "real", True),
        ("duration", "real", True),
        ("outcome", "text", True),
        ("error", "text", False),
        ("status_code", "int", False),
        ("remote_id", "text", False),
    ),
    "quarantine": (
        ("id", "id", True),
        ("received_at", "real", True),
        ("reason", "text", True),
        ("lead_id", "text", False),
        ("item_index", "int", False),
        ("raw", "text", True),
    ),
    "settings": (("name", "text", True), ("value", "text", True)),
    "audit_log": (
        ("id", "id", True),
        ("at", "real", True),
        ("actor", "text", True),
        ("action", "text", True),
        ("target", "text", False),
        ("detail", "text", False),
    ),
    "unmapped_keys": (
        ("destination", "text", True),
        ("key", "text", True),
        ("first_seen", "real", True),
        ("last_seen", "real", True),
        ("count", "count", True),
    ),
    "erased_leads": (("id", "text", True), ("erased_at", "real", True)),
    "lead_search": (("hash", "bytes", True), ("lead_id", "text", True)),
    "schema_version": (("version", "int", True),),
}

# Secondary indexes by name (primary keys and UNIQUE constraints aside).
INDEXES = (
    "leads_received",
    "deliveries_due",
    "deliveries_dead",
    "deliveries_delivered",
    "deliveries_skipped",
    "deliveries_updated",
    "attempts_lead",
    "attempts_delivery",
    "leads_email_hash",
    "leads_phone_hash",
)

# What only one dialect has, and why.
ONLY: dict[Dialect, dict[str, tuple[str, ...]]] = {
    "sqlite": {
        # The search index in a table of its own (with two triggers keeping it
        # in step), filled off intake's path behind a watermark (SQLite's
        # migration 5); PostgreSQL keeps partial indexes on the hash columns of
        # leads (its migration 2; the split was not measured there).
        "tables": ("lead_search",),
        "indexes": (),
        "columns": (),
    },
    "postgresql": {
        "tables": (),
        # Search by hash (see above); deliveries by update time for the console's
        # listings (SQLite scans in a reader thread rather than pay an index on
        # every intake insert); attempts by delivery (erase and cascades).
        "indexes": (
            "leads_email_hash",
            "leads_phone_hash",
            "deliveries_updated",
            "attempts_delivery",
        ),
        # Leases expire on the database's clock: replicas on several hosts
        # share the queue (SQLite has one host and one clock).
        "columns": ("deliveries.lease_expires_at",),
    },
}


def expected(dialect: Dialect) -> tuple[dict[str, list[tuple[str, str, bool]]], set[str]]:
    """The tables (columns as the dialect's catalog reports them) and the
    secondary index names a fully migrated ``dialect`` database holds."""
    other: Dialect = "postgresql" if dialect == "sqlite" else "sqlite"
    tables = {
        name: [
            (column, TYPES[kind][dialect], not_null)
            for column, kind, not_null in columns
            if f"{name}.{column}" not in ONLY[other]["columns"]
        ]
        for name, columns in TABLES.items()
        if name not in ONLY[other]["tables"]
    }
    return tables, set(INDEXES) - set(ONLY[other]["indexes"])
