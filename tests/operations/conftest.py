"""The store fixtures of tests/store (SQLite and PostgreSQL) for the operations."""

from tests.store.conftest import make_pg, pg_schema, store

__all__ = ["make_pg", "pg_schema", "store"]
