"""PostgreSQL schema: the migrations, in order (SQLite's are in sqlite_schema.py).

Append a new migration at the end; never edit one that has shipped; update the
current schema both backends' histories add up to in schema.py with it. Replicas
starting at once apply them exactly once (PostgresStore._migrate holds an
advisory lock keyed by MIGRATION_LOCK and the schema name).
"""

from __future__ import annotations

# First key of pg_advisory_xact_lock(int, int); the second is hashtext(schema), so
# migrations of different schemas in one database do not wait on each other.
MIGRATION_LOCK = 0x1EAD_B1D

MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE leads (
            id text PRIMARY KEY,
            received_at double precision NOT NULL,
            created text,
            url text,
            payload text,
            purged_at double precision
        )""",
        "CREATE INDEX leads_received ON leads (received_at)",
        """CREATE TABLE deliveries (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            lead_id text NOT NULL REFERENCES leads (id) ON DELETE CASCADE,
            destination text NOT NULL,
            status text NOT NULL,
            attempts integer NOT NULL DEFAULT 0,
            created_at double precision NOT NULL,
            next_attempt_at double precision,
            lease_token text,
            last_error text,
            last_status_code integer,
            remote_id text,
            delivered_at double precision,
            updated_at double precision NOT NULL,
            UNIQUE (lead_id, destination)
        )""",
        # Partial index: a claim reads only due rows of one destination, so its cost
        # does not grow with the number of delivered rows.
        """CREATE INDEX deliveries_due ON deliveries (destination, next_attempt_at)
            WHERE status = 'pending'""",
        "CREATE INDEX deliveries_updated ON deliveries (updated_at)",
        """CREATE TABLE attempts (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            delivery_id bigint NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
            lead_id text NOT NULL,
            destination text NOT NULL,
            number integer NOT NULL,
            started_at double precision NOT NULL,
            duration double precision NOT NULL,
            outcome text NOT NULL,
            error text,
            status_code integer,
            remote_id text
        )""",
        "CREATE INDEX attempts_lead ON attempts (lead_id)",
        "CREATE INDEX attempts_delivery ON attempts (delivery_id)",
        """CREATE TABLE quarantine (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            received_at double precision NOT NULL,
            reason text NOT NULL,
            lead_id text,
            item_index integer,
            raw text NOT NULL
        )""",
    ],
    # 2: the operator console, as SQLite's migration 2 (see sqlite_schema.py).
    [
        "ALTER TABLE leads ADD COLUMN email_hash bytea",
        "ALTER TABLE leads ADD COLUMN phone_hash bytea",
        "CREATE INDEX leads_email_hash ON leads (email_hash) WHERE email_hash IS NOT NULL",
        "CREATE INDEX leads_phone_hash ON leads (phone_hash) WHERE phone_hash IS NOT NULL",
        "CREATE TABLE settings (name text PRIMARY KEY, value text NOT NULL)",
        """CREATE TABLE audit_log (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at double precision NOT NULL,
            actor text NOT NULL,
            action text NOT NULL,
            target text,
            detail text
        )""",
        """CREATE TABLE unmapped_keys (
            destination text NOT NULL,
            key text NOT NULL,
            first_seen double precision NOT NULL,
            last_seen double precision NOT NULL,
            count bigint NOT NULL,
            PRIMARY KEY (destination, key)
        )""",
        """CREATE INDEX deliveries_dead ON deliveries (destination, updated_at)
            WHERE status = 'dead'""",
        """CREATE INDEX deliveries_delivered ON deliveries (destination, delivered_at)
            WHERE status = 'delivered'""",
    ],
    # 3: tombstones of erased leads (see the SQLite schema).
    [
        """CREATE TABLE erased_leads (
            id text PRIMARY KEY,
            erased_at double precision NOT NULL
        )""",
    ],
    # 4: leases expire on the database's clock (PostgreSQL only: replicas on
    # several hosts share the queue; SQLite has one host and one clock).
    ["ALTER TABLE deliveries ADD COLUMN lease_expires_at double precision"],
    # 5: console queries at 100k leads / 300k deliveries (bench/console.py; SQLite's 4):
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
]
