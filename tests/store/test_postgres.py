"""PostgreSQL-only behaviour: replicas sharing one database, restarts, outages."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import psycopg
import pytest

from bridge.app import create_app
from bridge.destinations import Runtime
from bridge.engine import Engine
from bridge.errors import ConfigError, StoreError, StoreUnavailable
from bridge.metrics import Metrics
from bridge.store.base import LeadIn, QuarantineIn
from bridge.store.postgres import PostgresStore
from bridge.store.postgres_schema import MIGRATIONS
from tests.conftest import make_lead
from tests.fakes import Script
from tests.store.conftest import PG_URL
from tests.store.test_store import T0, lead
from tests.waiting import eventually

pytestmark = pytest.mark.postgres

MakePG = Callable[..., PostgresStore]


async def test_replicas_starting_at_once_migrate_exactly_once(
    make_pg: MakePG, pg_schema: str
) -> None:
    replicas = [make_pg() for _ in range(4)]
    await asyncio.gather(*(r.open() for r in replicas))
    with psycopg.connect(PG_URL) as conn:
        versions = conn.execute(f"SELECT version FROM {pg_schema}.schema_version").fetchall()  # noqa: S608
    assert versions == [(v,) for v in range(1, len(MIGRATIONS) + 1)]
    await replicas[0].close()
    again = make_pg()
    await again.open()  # nothing left to apply
    assert (await again.status(T0)).leads == 0


async def test_two_replicas_claiming_at_once_never_share_a_row(make_pg: MakePG) -> None:
    a, b = make_pg(), make_pg()
    await a.open()
    await b.open()
    for start in range(0, 400, 100):
        await a.ingest([lead(f"l{i}") for i in range(start, start + 100)], ["crm"], [], T0)

    async def drain(replica: PostgresStore) -> list[int]:
        got: list[int] = []
        while batch := await replica.claim(destination="crm", limit=7, lease_seconds=60, now=T0):
            got.extend(c.delivery_id for c in batch)
        return got

    got_a, got_b = await asyncio.gather(drain(a), drain(b))
    assert not set(got_a) & set(got_b)
    assert len(got_a) + len(got_b) == 400 and len(set(got_a) | set(got_b)) == 400


async def test_same_lead_at_two_replicas_at_once_is_stored_once(make_pg: MakePG) -> None:
    a, b = make_pg(), make_pg()
    await a.open()
    await b.open()
    leads = [lead(f"dup{i}") for i in range(50)]
    results = await asyncio.gather(
        *(replica.ingest([one], ["crm"], [], T0) for one in leads for replica in (a, b))
    )
    accepted = [x for r in results for x in r.accepted]
    assert sorted(accepted) == sorted(x.id for x in leads)
    assert sum(len(r.duplicates) for r in results) == 50
    assert (await b.status(T0)).destinations[0].counts["pending"] == 50


async def test_the_same_body_twice_in_one_group_is_accepted_once(make_pg: MakePG) -> None:
    """A provider retry can land in the same group as the original: equal
    requests, equal leads; exactly one of them gets each lead accepted."""
    store = make_pg()
    await store.open()
    body = [lead("twin-a"), lead("twin-b")]
    results = await asyncio.gather(*(store.ingest(list(body), ["crm"], [], T0) for _ in range(3)))
    assert sorted(x for r in results for x in r.accepted) == ["twin-a", "twin-b"]
    assert sum(len(r.duplicates) for r in results) == 4
    assert len(await store.get_deliveries("twin-a")) == 1


async def test_one_bad_request_does_not_fail_its_batch_neighbours(make_pg: MakePG) -> None:
    store = make_pg()
    await store.open()
    too_big = QuarantineIn("bad", "{}", None, 2**40)  # overflows the integer column
    calls = [store.ingest([lead(f"n{i}")], ["crm"], [], T0) for i in range(5)]
    calls.insert(2, store.ingest([lead("bad")], ["crm"], [too_big], T0))
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[2], StoreError) and not isinstance(results[2], StoreUnavailable)
    assert "NumericValueOutOfRange" in str(results[2])
    assert [r.accepted for r in results if not isinstance(r, BaseException)] == [
        [f"n{i}"] for i in range(5)
    ]
    assert await store.get_lead("bad") is None  # nothing half-stored


async def test_nul_characters(make_pg: MakePG) -> None:
    store = make_pg()
    await store.open()
    with pytest.raises(StoreError, match="NUL"):
        await store.ingest([LeadIn("a\x00b", "{}")], ["crm"], [], T0)
    await store.ingest([], [], [QuarantineIn("binary", "ab\x00cd")], T0)
    (item,) = await store.list_quarantine()
    assert item["raw"] == "ab\\u0000cd"


def _terminate_backends(application_name: str) -> int:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        rows = conn.execute(
            # with a timeout, pg_terminate_backend returns once the backend has
            # exited (its socket closed), not when it has only been signalled
            "SELECT pg_terminate_backend(pid, 30000) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (application_name,),
        ).fetchall()
    return len(rows)


async def test_reconnects_after_connections_are_killed(make_pg: MakePG, pg_schema: str) -> None:
    store = make_pg(pool_size=3)
    await store.open()
    await store.ingest([lead("before")], ["crm"], [], T0)
    assert _terminate_backends(pg_schema) >= 1
    # the pool checks connections before handing them out: no request sees the break
    result = await store.ingest([lead("after")], ["crm"], [], T0)
    assert result.accepted == ["after"]
    await store.ping()
    claims = await store.claim(destination="crm", limit=10, lease_seconds=5, now=T0)
    assert sorted(c.lead_id for c in claims) == ["after", "before"]


async def test_a_replica_whose_clock_runs_ahead_does_not_take_a_held_lease(
    make_pg: MakePG,
) -> None:
    """Leases expire on the database's clock: a replica an hour ahead sees the
    row as due by its own clock, but the lease another replica holds is still
    running on the database's."""
    first, ahead = make_pg(), make_pg()
    await first.open()
    await ahead.open()
    await first.ingest([lead("held")], ["crm"], [], T0)
    (held,) = await first.claim(destination="crm", limit=10, lease_seconds=30, now=T0)
    assert await ahead.claim(destination="crm", limit=10, lease_seconds=30, now=T0 + 3600) == []
    # Once it has expired on the database's clock, another replica takes it.
    await first.execute(
        [("UPDATE deliveries SET lease_expires_at = extract(epoch FROM now()) - 1", [])]
    )
    (taken,) = await ahead.claim(destination="crm", limit=10, lease_seconds=30, now=T0 + 3600)
    assert taken.delivery_id == held.delivery_id and taken.lease_token != held.lease_token


async def test_unreachable_database_is_store_unavailable() -> None:
    store = PostgresStore("postgresql://postgres@127.0.0.1:1/test", timeout=0.5)
    with pytest.raises(StoreUnavailable):
        await store.open()
    with pytest.raises(StoreUnavailable):
        await store.ping()
    with pytest.raises(StoreUnavailable):
        await store.ingest([lead("x")], [], [], T0)


class TcpProxy:
    """127.0.0.1 -> the PostgreSQL server; ``down()`` is a database outage (listener
    closed, connections cut) without disturbing the shared server."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 5432)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


async def test_outage_fails_ping_and_ingest_then_recovers(make_pg: MakePG) -> None:
    proxy = TcpProxy()
    await proxy.up()
    store = make_pg(f"postgresql://postgres@127.0.0.1:{proxy.port}/test", pool_size=2, timeout=1.0)
    await store.open()
    await proxy.down()
    with pytest.raises(StoreUnavailable):
        await store.ping()
    with pytest.raises(StoreUnavailable):
        await store.ingest([lead("during")], ["crm"], [], T0)
    await proxy.up()

    async def reconnected() -> bool:  # the pool reconnects in the background, with backoff
        try:
            await store.ping()
        except StoreUnavailable:
            return False
        return True

    await eventually(reconnected, "the pool to reconnect", interval=0.1)
    assert (await store.ingest([lead("after")], ["crm"], [], T0)).accepted == ["after"]
    assert await store.get_lead("during") is None
    await store.close()
    await proxy.down()


async def test_intake_answers_503_and_readiness_fails_while_the_database_is_down(
    make_pg: MakePG, make_runtime: Callable[..., Runtime]
) -> None:
    proxy = TcpProxy()
    await proxy.up()
    store = make_pg(f"postgresql://postgres@127.0.0.1:{proxy.port}/test", timeout=1.0)
    await store.open()
    app = create_app(make_runtime(), store=store, start_workers=False)
    body = json.dumps([make_lead("led_outage")])
    headers = {"content-type": "application/json"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://test"
    ) as client:
        assert (await client.get("/readyz")).status_code == 200
        await proxy.down()
        assert (await client.get("/readyz")).status_code == 503
        response = await client.post("/lead/webhook", content=body, headers=headers)
        assert response.status_code == 503
        await proxy.up()

        async def ready() -> bool:
            return (await client.get("/readyz")).status_code == 200

        await eventually(ready, "/readyz to recover", interval=0.1)
        response = await client.post("/lead/webhook", content=body, headers=headers)
        assert (response.status_code, response.json()["accepted"]) == (200, 1)
    await store.close()
    await proxy.down()


async def test_workers_back_off_while_the_database_is_down_and_resume_without_restart(
    make_pg: MakePG,
    make_runtime: Callable[..., Runtime],
    caplog: pytest.LogCaptureFixture,
    scripts: dict[str, Script],
) -> None:
    """During the outage the claim loop logs claim_failed and waits (it is not a
    crash: no restart, readiness does not list it as down); when the database
    is back the same engine delivers what is stored after it, no restart."""
    proxy = TcpProxy()
    await proxy.up()
    store = make_pg(f"postgresql://postgres@127.0.0.1:{proxy.port}/test", pool_size=3, timeout=1.0)
    await store.open()
    script = scripts["pg-outage"] = Script()
    runtime = make_runtime(
        destinations=[
            {
                "name": "crm",
                "type": "tests.fakes:ScriptedConnector",
                "settings": {"script": "pg-outage"},
            }
        ],
        worker={"poll_interval": "20ms"},
    )
    engine = Engine(store, runtime.active, Metrics(), runtime.config.worker)
    await engine.start()
    try:
        await store.ingest([lead("before")], ["crm"], [], time.time())
        await eventually(lambda: [c.lead_id for c in script.calls] == ["before"], "delivery")
        with caplog.at_level(logging.WARNING, logger="lead_bridge.engine"):
            await proxy.down()
            await eventually(lambda: "event=claim_failed" in caplog.text, "a failed claim")
            assert engine.workers_down() == [] and engine.workers[0].restarts == 0
            await proxy.up()

            async def stored() -> bool:
                try:
                    await store.ingest([lead("after")], ["crm"], [], time.time())
                except StoreUnavailable:
                    return False
                return True

            await eventually(stored, "intake to recover", interval=0.1)
            engine.wake()
            await eventually(
                lambda: [c.lead_id for c in script.calls] == ["before", "after"], "delivery"
            )
        assert engine.workers[0].restarts == 0

        # The outcome is committed after the send returned (the finisher's group
        # commit): wait for it rather than read the row at once.
        async def delivered() -> bool:
            return (await store.get_deliveries("after"))[0].status == "delivered"

        await eventually(delivered, "the outcome to be committed")
    finally:
        await engine.stop(timeout=10)
        await store.close()
        await proxy.down()


def test_schema_from_url_options_and_bad_names() -> None:
    store = PostgresStore(f"{PG_URL}?options=-csearch_path%3Dlb_from_url")
    assert store.schema == "lb_from_url"
    assert "search_path=lb_from_url" in store.conninfo
    assert PostgresStore(PG_URL).schema is None
    with pytest.raises(ConfigError, match="schema name"):
        PostgresStore(PG_URL, schema="x; DROP TABLE leads")


async def test_claim_reads_the_due_index_not_the_table(make_pg: MakePG) -> None:
    """The claim's plan: a range scan of deliveries_due that stops at LIMIT, at
    any table size (bench/pg_claims.py measures the cost at 1k and 1M pending)."""
    store = make_pg()
    await store.open()
    await store.execute(
        [
            (
                "INSERT INTO leads (id, received_at, payload) "
                "SELECT 'l' || i, 0, '{}' FROM generate_series(1, 20000) AS i",
                [],
            ),
            # Most rows are history (delivered), some are pending for two destinations.
            (
                "INSERT INTO deliveries (lead_id, destination, status, created_at, "
                "next_attempt_at, updated_at) SELECT 'l' || i, "
                "CASE WHEN i % 2 = 0 THEN 'crm' ELSE 'slack' END, "
                "CASE WHEN i % 10 = 0 THEN 'pending' ELSE 'delivered' END, 0, i, 0 "
                "FROM generate_series(1, 20000) AS i",
                [],
            ),
            ("ANALYZE deliveries", []),
            ("ANALYZE leads", []),
        ]
    )
    from bridge.store.postgres import CLAIM

    async with store._connection() as conn:
        cur = await conn.execute(f"EXPLAIN {CLAIM}", (T0 + 30, "t", 30, "crm", T0, 50))
        plan = "\n".join(row[0] for row in await cur.fetchall())
    assert "Index Scan using deliveries_due on deliveries" in plan, plan
    assert "Seq Scan on deliveries" not in plan, plan
    # In index order: no sort of all the due rows before LIMIT.
    assert "Sort" not in plan.split("Limit")[1], plan
    claims = await store.claim(destination="crm", limit=50, lease_seconds=30, now=T0 + 1e6)
    assert len(claims) == 50


async def test_intake_writes_a_whole_group_in_one_statement(make_pg: MakePG) -> None:
    """However many requests and leads a group holds, the writer sends one
    statement per group (one round trip, one commit)."""
    store = make_pg()
    await store.open()
    writer = store._writer
    connect = writer.connect
    statements: list[int] = []  # leads in each statement

    class Counting:
        def __init__(self, conn: Any) -> None:
            self.conn = conn

        async def execute(self, query: Any, params: Any = None) -> Any:
            statements.append(len(params[0]))
            return await self.conn.execute(query, params)

    @contextlib.asynccontextmanager
    async def counting() -> AsyncIterator[Counting]:
        async with connect() as conn:
            yield Counting(conn)

    writer.connect = counting
    results = await asyncio.gather(
        *(
            store.ingest([lead(f"g{r}-{i}") for i in range(10)], ["crm", "slack"], [], T0)
            for r in range(50)
        )
    )
    assert all(len(r.accepted) == 10 for r in results)
    assert sum(statements) == 500 and len(statements) < 50, statements
    assert max(statements) >= 20  # requests queued behind a commit share the next one
    assert len(await store.get_deliveries("g49-9")) == 2
