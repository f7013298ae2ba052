"""The PostgreSQL store behind PgBouncer in transaction mode (Debian's pgbouncer).

Each test runs its own PgBouncer on a free port, pooling two server connections
for a fresh database (a schema in the URL is session state PgBouncer does not
carry), so replicas' transactions interleave on shared server connections the
way they do in production. Skipped when the pgbouncer binary is not installed
(``apt-get install pgbouncer``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from bridge.errors import ConfigError
from bridge.store.base import Outcome
from bridge.store.postgres import PostgresStore
from tests.processes import free_port
from tests.store.conftest import PG_URL
from tests.store.test_store import T0, lead
from tests.waiting import wait_until

pytestmark = pytest.mark.postgres

PGBOUNCER = shutil.which("pgbouncer") or (
    "/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None
)


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def bouncer_url() -> Iterator[str]:
    """postgresql://… through a PgBouncer (transaction mode) to a fresh database."""
    if PGBOUNCER is None:
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    info = psycopg.conninfo.conninfo_to_dict(PG_URL)
    database = f"lb_pgb_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    port = free_port()
    user = str(info.get("user") or "postgres")
    # pgbouncer drops root for `user`, who must read its files: not under pytest's
    # tmp_path (0700, root's). It logs to stderr, a file opened here.
    with tempfile.TemporaryDirectory(prefix="lb-pgbouncer-") as tmp:
        tmp_path = Path(tmp)
        tmp_path.chmod(0o755)
        yield from _run_pgbouncer(tmp_path, port, user, info, database)


def _run_pgbouncer(
    tmp_path: Path, port: int, user: str, info: dict[str, object], database: str
) -> Iterator[str]:
    (tmp_path / "users.txt").write_text(f'"{user}" ""\n')
    (tmp_path / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={info.get('host', '127.0.0.1')} port={info.get('port', 5432)}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {tmp_path / 'users.txt'}\n"
        "pool_mode = transaction\ndefault_pool_size = 2\nmax_client_conn = 200\n"
        "ignore_startup_parameters = extra_float_digits\n"
    )
    args = [PGBOUNCER, str(tmp_path / "pgbouncer.ini")]
    if os.geteuid() == 0:  # pgbouncer refuses to run as root
        args[1:1] = ["-u", user]
    with (tmp_path / "stderr.txt").open("wb") as stderr:
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        wait_until(lambda: _accepts(port) or process.poll() is not None, "pgbouncer to listen")
        if process.poll() is not None:
            pytest.fail(f"pgbouncer exited: {(tmp_path / 'stderr.txt').read_text()}")
        yield f"postgresql://{user}@127.0.0.1:{port}/{database}"
    finally:
        process.terminate()
        process.wait(timeout=30)
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )


MakeStore = Callable[..., PostgresStore]


async def test_replicas_through_pgbouncer_in_transaction_mode(bouncer_url: str) -> None:
    """Three replicas (pools of 4) share PgBouncer's two server connections:
    migrations, group-committed intake, claims and batched finishes, each run
    far more than psycopg's prepare threshold of 5 on interleaved connections."""
    replicas = [PostgresStore(bouncer_url, pool_size=4, pgbouncer=True) for _ in range(3)]
    try:
        await asyncio.gather(*(r.open() for r in replicas))

        async def post(replica: PostgresStore, n: int) -> None:
            for i in range(20):
                await replica.ingest([lead(f"r{n}-{i}"), lead(f"dup-{i}")], ["crm"], [], T0)

        await asyncio.gather(*(post(r, n) for n, r in enumerate(replicas)))
        delivered: list[str] = []

        async def drain(replica: PostgresStore) -> None:
            while claims := await replica.claim(
                destination="crm", limit=3, lease_seconds=60, now=time.time()
            ):
                outcomes = [
                    Outcome(c.delivery_id, c.lease_token, "delivered", "delivered", T0, 0.01)
                    for c in claims
                ]
                assert all(await replica.finish(outcomes))
                delivered.extend(c.lead_id for c in claims)

        await asyncio.gather(*(drain(r) for r in replicas))
        assert len(delivered) == len(set(delivered)) == 3 * 20 + 20
        status = await replicas[0].status(T0)
        assert status.leads == 80
        await replicas[1].ping()
    finally:
        for replica in replicas:
            await replica.close()


def test_a_schema_in_the_url_is_refused_behind_pgbouncer() -> None:
    with pytest.raises(ConfigError, match="PgBouncer") as info:
        PostgresStore(f"{PG_URL}?options=-csearch_path%3Dlb_x", pgbouncer=True)
    assert info.value.problems[0][0] == "storage.url"
