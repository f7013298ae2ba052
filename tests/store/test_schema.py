"""Both backends' migration histories add up to the one declared schema
(bridge/store/schema.py), with the dialect differences it names and no others."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from bridge.store import sqlite_schema
from bridge.store.postgres import PostgresStore
from bridge.store.schema import ONLY, TABLES, expected
from tests.store.conftest import PG_URL


def test_sqlite_migrations_give_the_declared_schema(tmp_path: Path) -> None:
    conn = sqlite_schema.connect(tmp_path / "schema.db", "NORMAL")
    try:
        sqlite_schema.migrate(conn)
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        # an INTEGER PRIMARY KEY (the rowid) or a PRIMARY KEY column is not null
        tables = {
            name: [
                (column, kind, bool(not_null or pk))
                for _, column, kind, not_null, _, pk in conn.execute(f"PRAGMA table_info({name})")
            ]
            for name in names
        }
        indexes = {
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            )
        }
    finally:
        conn.close()
    assert (tables, indexes) == expected("sqlite")


@pytest.mark.postgres
async def test_postgresql_migrations_give_the_declared_schema(
    make_pg: Callable[..., PostgresStore], pg_schema: str
) -> None:
    await make_pg().open()
    with psycopg.connect(PG_URL, options=f"-csearch_path={pg_schema}") as conn:
        tables: dict[str, list[tuple[str, str, bool]]] = {}
        for table, column, kind, nullable in conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable "
            "FROM information_schema.columns WHERE table_schema = current_schema() "
            "ORDER BY table_name, ordinal_position"
        ):
            tables.setdefault(table, []).append((column, kind, nullable == "NO"))
        # indexes that back a primary key or UNIQUE constraint are not declared
        indexes = {
            r[0]
            for r in conn.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
                "AND indexname NOT IN (SELECT conname FROM pg_constraint "
                "WHERE connamespace = current_schema()::regnamespace)"
            )
        }
    assert (tables, indexes) == expected("postgresql")


def test_every_named_difference_is_in_the_declaration() -> None:
    for only in ONLY.values():
        assert set(only["tables"]) <= set(TABLES)
        for qualified in only["columns"]:
            table, column = qualified.split(".")
            assert column in [c for c, _, _ in TABLES[table]]
