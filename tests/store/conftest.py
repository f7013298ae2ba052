"""The ``store`` fixture: every test in test_store.py runs on SQLite and PostgreSQL.

PostgreSQL tests use ``LEAD_BRIDGE_TEST_PG`` (default: the local server, database
``test``) and a fresh random schema per test, dropped afterwards, so concurrent
runs do not collide. They fail (not skip) when the server is down: the test
command starts it; deselect them with ``-m "not postgres"``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from bridge.store.base import Store
from bridge.store.postgres import PostgresStore
from bridge.store.sqlite import SQLiteStore

PG_URL = os.environ.get("LEAD_BRIDGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _drop_schema(schema: str) -> None:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh schema name, dropped with everything in it after the test."""
    schema = f"lb_test_{uuid.uuid4().hex[:12]}"
    try:
        psycopg.connect(PG_URL, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL at {PG_URL} is unreachable ({exc}); start it or use -m 'not postgres'"
        )
    yield schema
    _drop_schema(schema)


@pytest.fixture
async def make_pg(pg_schema: str) -> AsyncIterator[Callable[..., PostgresStore]]:
    """Build PostgreSQL stores on the test's schema (several = several replicas)."""
    built: list[PostgresStore] = []

    def make(url: str = PG_URL, **kwargs: object) -> PostgresStore:
        # application_name = the schema, so a test can kill exactly its own backends
        url = f"{url}{'&' if '?' in url else '?'}application_name={pg_schema}"
        store = PostgresStore(url, schema=pg_schema, **kwargs)  # type: ignore[arg-type]
        built.append(store)
        return store

    yield make
    for store in built:
        await store.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    backend: Store
    if request.param == "sqlite":
        backend = SQLiteStore(f"sqlite:///{tmp_path / 'store.db'}")
    else:
        backend = PostgresStore(PG_URL, schema=request.getfixturevalue("pg_schema"), pool_size=4)
    await backend.open()
    yield backend
    await backend.close()
