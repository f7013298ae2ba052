"""PostgreSQL store plumbing shared by its parts: the connection pool seam,
error translation, the URL's schema, and raw SQL for :mod:`bridge.operations`.

:class:`~bridge.store.postgres.PostgresStore` is assembled from
:class:`PostgresBase` (here), its reads (postgres_reads.py), its data
protection (postgres_privacy.py), intake (postgres_intake.py) and its own
delivery and lifecycle methods.
"""

from __future__ import annotations

import re
import select
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

from bridge.errors import ConfigError, StoreError, StoreUnavailable
from bridge.store.base import Store

_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_SEARCH_PATH_RE = re.compile(r"-c\s*search_path=([^\s,]+)")


def _translate(exc: psycopg.Error) -> StoreError:
    """The one place psycopg errors become Lead Bridge errors.

    Connection loss, pool timeouts, server shutdown, deadlocks and serialization
    failures are all "try again later": ``StoreUnavailable``. Anything else is a
    bug or bad data: ``StoreError`` with the server's primary message only (the
    DETAIL line can quote row values).
    """
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return StoreUnavailable(f"PostgreSQL unavailable: {type(exc).__name__}: {exc}")
    primary = exc.diag.message_primary if exc.diag else None
    return StoreError(f"PostgreSQL error: {type(exc).__name__}: {primary or exc}")


def _schema_from(url: str, schema: str | None) -> tuple[str, str | None]:
    """Return the conninfo to connect with and the schema to create (if any)."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"invalid PostgreSQL url: {exc}", path="storage.url") from exc
    options = str(params.get("options") or "")
    if schema is None:
        found = _SEARCH_PATH_RE.findall(options)
        schema = found[-1] if found else None
    elif schema:
        options = f"{options} -csearch_path={schema}".strip()
    if schema is not None and not _SCHEMA_RE.match(schema):
        raise ConfigError(
            f"invalid PostgreSQL schema name {schema!r}: use letters, digits and _",
            path="storage.url",
        )
    extra: dict[str, Any] = {"options": options} if options else {}
    params.setdefault("connect_timeout", "5")
    params.setdefault("application_name", "lead-bridge")
    return make_conninfo(make_conninfo("", **params), **extra), schema


async def check_taken(conn: Any) -> None:
    """The pool's check of a connection it is about to hand out.

    An idle connection that is healthy has nothing to read: the server only
    speaks unprompted to say it is closing the connection (a restart, a
    terminated backend), and a closed socket reads as end-of-file. So one poll
    of the socket (no round trip) tells a healthy connection from one to try
    with a query, which raises if the connection is broken and the pool then
    replaces it: no request sees the break.
    """
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("the connection is closed")
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    if poller.poll(0):
        await AsyncConnectionPool.check_connection(conn)


class PostgresBase(Store):
    """The pool seam: every statement of the PostgreSQL store runs through
    :meth:`_connection`, which turns psycopg errors into Lead Bridge errors."""

    _pool: AsyncConnectionPool | None = None

    @asynccontextmanager
    async def _connection(self, wait: float | None = None) -> AsyncIterator[Any]:
        if self._pool is None:
            raise StoreUnavailable("the store is closed")
        try:
            async with self._pool.connection(timeout=wait) as conn:
                yield conn
        except psycopg.Error as exc:
            raise _translate(exc) from exc

    async def _fetch(self, query: Any, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self._connection() as conn:
            cur = await conn.execute(query, params)
            return list(await cur.fetchall())

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        rows = await self._fetch(_placeholders(sql), params)  # type: ignore[arg-type]
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]

    async def execute(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[int]:
        counts = []
        async with self._connection() as conn, conn.transaction():
            for query, params in statements:
                cur = await conn.execute(_placeholders(query), params)  # type: ignore[arg-type]
                counts.append(int(cur.rowcount))
        return counts


class _Settings:
    """The settings table through one connection, for search_key_plan_async."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def get(self, name: str) -> str | None:
        cur = await self.conn.execute("SELECT value FROM settings WHERE name = %s", (name,))
        row = await cur.fetchone()
        return None if row is None else str(row[0])

    async def put_new(self, name: str, value: str) -> None:
        await self.conn.execute(
            "INSERT INTO settings (name, value) VALUES (%s, %s) ON CONFLICT (name) DO NOTHING",
            (name, value),
        )

    async def delete(self, name: str) -> None:
        await self.conn.execute("DELETE FROM settings WHERE name = %s", (name,))


def _placeholders(query: str) -> str:
    """bridge.operations' ``?`` placeholders as psycopg's ``%s``."""
    return query.replace("%", "%%").replace("?", "%s")


def _filters(**equal: str | None) -> tuple[list[sql.Composable], list[Any]]:
    """``column = %s`` conditions for the values that are not None (columns are ours)."""
    where: list[sql.Composable] = [sql.SQL("true")]
    params: list[Any] = []
    for column, value in equal.items():
        if value is not None:
            where.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
    return where, params
