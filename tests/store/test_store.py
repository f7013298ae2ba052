"""The store contract, run against every backend (see conftest.py)."""

from __future__ import annotations

import json

import pytest

from bridge.errors import StoreError
from bridge.intake import BodyStore, body_ingester
from bridge.store.base import (
    LeadIn,
    Outcome,
    QuarantineIn,
    Store,
    replay_choice,
    versions_to_apply,
)

T0 = 1_700_000_000.0
DESTS = ["crm", "chat"]


def lead(lead_id: str, email: str = "ann@example.com") -> LeadIn:
    return LeadIn(lead_id, json.dumps({"lead_id": lead_id, "email": email}))


async def seed(store: Store, *ids: str, now: float = T0, dests: list[str] = DESTS) -> None:
    result = await store.ingest([lead(i) for i in ids], dests, [], now)
    assert result.accepted == list(ids)


def done(claim_id: int, token: str, status: str = "delivered", **kw: object) -> Outcome:
    fields: dict[str, object] = {
        "attempt_outcome": status,
        "started_at": T0 + 10,
        "duration": 0.5,
    }
    fields.update(kw)
    return Outcome(claim_id, token, status, **fields)  # type: ignore[arg-type]


async def expire_leases(store: Store) -> None:
    """Let the leases run out. On PostgreSQL they expire on the database's clock,
    which a test cannot move forward like the ``now`` it passes: end them there."""
    if store.dialect == "postgresql":
        await store.execute(
            [("UPDATE deliveries SET lease_expires_at = 0 WHERE lease_token IS NOT NULL", [])]
        )


# ---------------------------------------------------------------------- ingest


async def test_ingest_accepts_new_and_reports_duplicates(store: Store) -> None:
    first = await store.ingest([lead("a"), lead("b")], DESTS, [], T0)
    assert (first.accepted, first.duplicates) == (["a", "b"], [])
    again = await store.ingest([lead("b"), lead("c")], DESTS, [], T0 + 1)
    assert (again.accepted, again.duplicates) == (["c"], ["b"])
    record = await store.get_lead("b")
    assert record is not None
    assert record.received_at == T0
    assert json.loads(record.payload or "")["lead_id"] == "b"


async def test_duplicate_within_one_batch_is_stored_once(store: Store) -> None:
    result = await store.ingest([lead("a"), lead("a", "other@example.com")], DESTS, [], T0)
    assert (result.accepted, result.duplicates) == (["a"], ["a"])
    record = await store.get_lead("a")
    assert record is not None and "ann@example.com" in (record.payload or "")
    assert len(await store.get_deliveries("a")) == 2


async def test_ingest_creates_one_pending_delivery_per_destination(store: Store) -> None:
    await seed(store, "a")
    deliveries = await store.get_deliveries("a")
    assert sorted(d.destination for d in deliveries) == sorted(DESTS)
    assert {(d.status, d.attempts, d.next_attempt_at, d.created_at) for d in deliveries} == {
        ("pending", 0, T0, T0)
    }


async def test_ingest_keeps_leads_and_quarantine_together(store: Store) -> None:
    bad = [QuarantineIn("missing lead_id", '{"email": 1}', None, 1), QuarantineIn("not json", "{")]
    result = await store.ingest([lead("a")], DESTS, bad, T0)
    assert result.accepted == ["a"]
    items = await store.list_quarantine()
    assert [(q["reason"], q["raw"], q["item_index"]) for q in items] == [
        ("not json", "{", None),
        ("missing lead_id", '{"email": 1}', 1),
    ]
    status = await store.status(T0)
    assert (status.leads, status.quarantined) == (1, 2)


async def test_a_body_is_parsed_split_and_stored_in_one_go(store: Store) -> None:
    # How intake stores a body: raw where the backend parses it (SQLite's
    # writer process), parsed in intake otherwise; the same result either way.
    body = (
        b'[{"id": "b1", "url": "https://x.test/p", "created": "2018-07-12T16:29:42Z",'
        b' "data": {"email": "ann@example.com", "n": 123456789012345678901234567890}},'
        b' {"id": ""}, {"id": "b1"}, {"id": "b2", "data": {"x": NaN}}]'
    )
    result = await body_ingester(store)(body, DESTS, T0)
    assert result.problem is None
    assert (result.received, result.rejected) == (4, 1)
    assert (result.accepted, result.duplicates) == (["b1", "b2"], ["b1"])
    assert result.lead_ids == ["b1", "b1", "b2"]
    stored = await store.get_lead("b1")
    assert stored is not None and stored.payload is not None
    assert (stored.url, stored.created) == ("https://x.test/p", "2018-07-12T16:29:42Z")
    assert '"n":123456789012345678901234567890' in stored.payload
    b2 = await store.get_lead("b2")
    assert b2 is not None and b2.payload == '{"id":"b2","data":{"x":NaN}}'
    [refused] = await store.list_quarantine()
    assert refused["reason"] == "element 1: 'id' must be a non-empty string, got a string"
    assert len(await store.get_deliveries("b1")) == len(DESTS)
    again = await body_ingester(store)(b'[{"id": "b2"}]', DESTS, T0 + 1)
    assert (again.accepted, again.duplicates) == ([], ["b2"])


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"nope", "invalid_json"),
        (b'{"id": "x"}', "not_an_array"),
        (b"[" * 40 + b"]" * 40, "too_deep"),
        (b"\xff[]", "invalid_json"),
    ],
)
async def test_a_refused_body_is_quarantined_whole(store: Store, body: bytes, code: str) -> None:
    result = await body_ingester(store)(body, DESTS, T0)
    assert result.problem is not None and result.problem[0] == code
    assert (result.received, result.accepted) == (0, [])
    [kept] = await store.list_quarantine()
    assert kept["reason"].startswith(f"{code}: ")
    assert kept["raw"] == body.decode("utf-8", "backslashreplace")
    assert (await store.status(T0)).leads == 0


async def test_a_probe_body_stores_nothing(store: Store) -> None:
    result = await body_ingester(store)(b" [ ] ", DESTS, T0)
    assert result.problem is None and result.received == 0
    status = await store.status(T0)
    assert (status.leads, status.quarantined) == (0, 0)


async def test_lead_without_destinations_counts_as_undelivered(store: Store) -> None:
    await seed(store, "a", dests=[])
    assert await store.get_deliveries("a") == []
    assert (await store.status(T0)).undelivered == 1


# ---------------------------------------------------------------------- claim


async def test_claim_takes_only_due_rows_of_the_destination(store: Store) -> None:
    await seed(store, "a")
    await seed(store, "later", now=T0 + 100)
    claims = await store.claim(destination="crm", limit=10, lease_seconds=30, now=T0 + 1)
    assert [(c.lead_id, c.destination, c.attempts) for c in claims] == [("a", "crm", 0)]
    assert claims[0].payload is not None and json.loads(claims[0].payload)["lead_id"] == "a"
    assert claims[0].received_at == T0 and claims[0].created_at == T0


async def test_claim_respects_limit_and_takes_oldest_first(store: Store) -> None:
    for index, lead_id in enumerate(["c", "a", "d", "b"]):
        await seed(store, lead_id, now=T0 + index)
    claims = await store.claim(destination="crm", limit=2, lease_seconds=30, now=T0 + 10)
    assert sorted(c.lead_id for c in claims) == ["a", "c"]
    assert len({c.lease_token for c in claims}) == 1


async def test_leased_rows_are_not_claimed_again_until_the_lease_expires(store: Store) -> None:
    await seed(store, "a")
    first = await store.claim(destination="crm", limit=10, lease_seconds=30, now=T0)
    assert len(first) == 1
    assert await store.claim(destination="crm", limit=10, lease_seconds=30, now=T0 + 29) == []
    (deliv,) = [d for d in await store.get_deliveries("a") if d.destination == "crm"]
    assert deliv.status == "pending" and deliv.next_attempt_at == T0 + 30
    await expire_leases(store)
    again = await store.claim(destination="crm", limit=10, lease_seconds=30, now=T0 + 31)
    assert [c.delivery_id for c in again] == [first[0].delivery_id]
    assert again[0].lease_token != first[0].lease_token


# ---------------------------------------------------------------------- finish


async def test_finish_is_fenced_on_the_lease_token(store: Store) -> None:
    await seed(store, "a")
    (old,) = await store.claim(destination="crm", limit=1, lease_seconds=5, now=T0)
    await expire_leases(store)
    (new,) = await store.claim(destination="crm", limit=1, lease_seconds=5, now=T0 + 6)
    applied = await store.finish(
        [
            done(old.delivery_id, old.lease_token, "dead", error="late"),
            done(new.delivery_id, new.lease_token, remote_id="R1", status_code=201),
        ]
    )
    assert applied == [False, True]
    (deliv,) = [d for d in await store.get_deliveries("a") if d.destination == "crm"]
    assert (deliv.status, deliv.remote_id, deliv.last_status_code, deliv.attempts) == (
        "delivered",
        "R1",
        201,
        1,
    )
    assert deliv.delivered_at == T0 + 10.5
    # the token is spent: finishing twice does nothing
    assert await store.finish([done(new.delivery_id, new.lease_token)]) == [False]


async def test_finish_records_attempts_and_schedules_retries(store: Store) -> None:
    await seed(store, "a", dests=["crm"])
    (c1,) = await store.claim(destination="crm", limit=1, lease_seconds=5, now=T0)
    retry = done(
        c1.delivery_id,
        c1.lease_token,
        "pending",
        attempt_outcome="retry",
        next_attempt_at=T0 + 60,
        error="HTTP 503",
        status_code=503,
    )
    assert await store.finish([retry]) == [True]
    assert await store.claim(destination="crm", limit=1, lease_seconds=5, now=T0 + 59) == []
    (c2,) = await store.claim(destination="crm", limit=1, lease_seconds=5, now=T0 + 60)
    assert c2.attempts == 1
    reauth = done(
        c2.delivery_id,
        c2.lease_token,
        "pending",
        attempt_outcome="auth_retry",
        next_attempt_at=T0 + 61,
        started_at=T0 + 60,
        count_attempt=False,
    )
    assert await store.finish([reauth]) == [True]
    (c3,) = await store.claim(destination="crm", limit=1, lease_seconds=5, now=T0 + 61)
    assert c3.attempts == 1
    assert await store.finish([done(c3.delivery_id, c3.lease_token, started_at=T0 + 62)]) == [True]
    attempts = await store.get_attempts("a")
    assert [(a.number, a.outcome, a.status_code) for a in attempts] == [
        (1, "retry", 503),
        (2, "auth_retry", None),
        (2, "delivered", None),
    ]
    assert attempts[0].error == "HTTP 503" and attempts[0].destination == "crm"


async def test_finish_applies_a_large_mixed_batch_in_order(store: Store) -> None:
    # More outcomes than one statement carries, duplicates, and a stale token.
    ids = [f"l{i:04d}" for i in range(700)]
    await seed(store, *ids, dests=["crm"])
    claims = await store.claim(destination="crm", limit=1000, lease_seconds=5, now=T0)
    assert len(claims) == 700
    outcomes = [
        done(
            c.delivery_id,
            c.lease_token,
            "pending" if n % 2 else "delivered",
            attempt_outcome="retry" if n % 2 else "delivered",
            next_attempt_at=T0 + 60 if n % 2 else None,
            status_code=503 if n % 2 else 201,
        )
        for n, c in enumerate(claims)
    ]
    first = claims[0]
    batch = [
        done(first.delivery_id, "stale"),
        *outcomes,
        outcomes[1],  # the same outcome twice is applied once
    ]
    applied = await store.finish(batch)
    assert applied == [False] + [True] * 700 + [False]
    status = {d.lead_id: d for lid in ids[:3] for d in await store.get_deliveries(lid)}
    by_claim = {c.lead_id: n for n, c in enumerate(claims)}
    for lead_id, row in status.items():
        n = by_claim[lead_id]
        assert (row.status, row.attempts) == ("pending" if n % 2 else "delivered", 1)
    attempts = await store.get_attempts(claims[1].lead_id)
    assert [(a.number, a.outcome, a.status_code) for a in attempts] == [(1, "retry", 503)]


# ---------------------------------------------------------------------- release / replay


async def test_release_makes_leases_due_again_without_an_attempt(store: Store) -> None:
    await seed(store, "a", "b", dests=["crm"])
    claims = await store.claim(destination="crm", limit=10, lease_seconds=60, now=T0)
    leases = [(c.delivery_id, c.lease_token) for c in claims]
    assert await store.release([*leases, (claims[0].delivery_id, "stale")], T0 + 1) == 2
    again = await store.claim(destination="crm", limit=10, lease_seconds=60, now=T0 + 1)
    assert len(again) == 2 and all(c.attempts == 0 for c in again)
    assert await store.get_attempts("a") == []


async def finish_as(store: Store, lead_id: str, status: str, now: float = T0) -> None:
    claims = await store.claim(destination="crm", limit=100, lease_seconds=5, now=now)
    (claim,) = [c for c in claims if c.lead_id == lead_id]
    others = [(c.delivery_id, c.lease_token) for c in claims if c.lead_id != lead_id]
    await store.release(others, now)
    assert await store.finish([done(claim.delivery_id, claim.lease_token, status)]) == [True]


async def test_replay_requeues_dead_and_needs_force_for_delivered(store: Store) -> None:
    await seed(store, "dead", "ok", dests=["crm"])
    await finish_as(store, "dead", "dead")
    await finish_as(store, "ok", "delivered")
    result = await store.replay(now=T0 + 100)
    assert (result.requeued, result.refused_delivered) == (1, 1)
    (deliv,) = await store.get_deliveries("dead")
    assert (deliv.status, deliv.next_attempt_at, deliv.created_at, deliv.attempts) == (
        "pending",
        T0 + 100,
        T0 + 100,
        1,
    )
    forced = await store.replay(now=T0 + 200, lead_id="ok", force=True)
    assert (forced.requeued, forced.refused_delivered) == (1, 0)
    assert (await store.get_deliveries("ok"))[0].status == "pending"
    assert (await store.replay(now=T0, lead_id="nope")).not_found == 1


async def test_replay_dead_only_leaves_other_rows(store: Store) -> None:
    await seed(store, "dead", "skip", dests=["crm"])
    await finish_as(store, "dead", "dead")
    await finish_as(store, "skip", "skipped")
    result = await store.replay(now=T0 + 1, dead_only=True, destination="crm")
    assert result.requeued == 1
    assert (await store.get_deliveries("skip"))[0].status == "skipped"


async def test_add_deliveries_creates_only_missing_rows(store: Store) -> None:
    await seed(store, "a", dests=["crm"])
    assert await store.add_deliveries("a", ["crm", "chat"], T0 + 5) == 1
    assert await store.add_deliveries("missing", ["crm"], T0 + 5) == 0
    chat = [d for d in await store.get_deliveries("a") if d.destination == "chat"]
    assert [(d.status, d.created_at) for d in chat] == [("pending", T0 + 5)]


# ---------------------------------------------------------------------- queries


async def test_status_counts_per_destination(store: Store) -> None:
    await seed(store, "a", "b", "c", dests=["crm"])
    await seed(store, "none", dests=[])
    await finish_as(store, "a", "delivered")
    await finish_as(store, "b", "skipped")
    await store.claim(destination="crm", limit=1, lease_seconds=50, now=T0 + 1)
    status = await store.status(T0 + 2)
    assert (status.leads, status.undelivered, status.unrouted) == (4, 1, 1)
    (crm,) = status.destinations
    assert crm.destination == "crm"
    assert crm.counts == {"pending": 1, "delivered": 1, "dead": 0, "skipped": 1}
    assert crm.in_flight == 1 and crm.oldest_pending_at == T0


async def test_queue_depths_and_finished_counts_agree_with_status(store: Store) -> None:
    await seed(store, "a", "b", "c", "d")
    await finish_as(store, "a", "dead")
    await finish_as(store, "b", "delivered")
    await finish_as(store, "c", "skipped")
    await store.claim(destination="chat", limit=1, lease_seconds=50, now=T0 + 1)
    status = await store.status(T0 + 2)
    depths = {d.destination: d for d in await store.queue_depths(T0 + 2)}
    finished = await store.finished_counts()
    for dest in status.destinations:
        depth = depths[dest.destination]
        assert {**depth.counts, **finished.get(dest.destination, {})} == {
            k: v for k, v in dest.counts.items() if k in depth.counts or v
        }
        assert (depth.in_flight, depth.oldest_pending_at) == (
            dest.in_flight,
            dest.oldest_pending_at,
        )
    assert depths["crm"].counts == {"pending": 1, "dead": 1}
    assert finished == {"crm": {"delivered": 1, "skipped": 1}}
    assert depths["chat"].in_flight == 1


async def test_list_deliveries_filters_and_orders_newest_first(store: Store) -> None:
    await seed(store, "a", "b", dests=["crm", "chat"])
    await finish_as(store, "a", "delivered", now=T0 + 1)
    rows = await store.list_deliveries()
    assert len(rows) == 4 and rows[0].lead_id == "a" and rows[0].destination == "crm"
    delivered = await store.list_deliveries(status="delivered")
    assert [(d.lead_id, d.status) for d in delivered] == [("a", "delivered")]
    chat = await store.list_deliveries(destination="chat", limit=1)
    assert len(chat) == 1 and chat[0].destination == "chat"
    assert [d.lead_id for d in await store.list_deliveries(since=T0 + 5)] == ["a"]


async def test_get_lead_missing_is_none(store: Store) -> None:
    assert await store.get_lead("nope") is None
    assert await store.get_deliveries("nope") == []
    assert await store.get_attempts("nope") == []


# ---------------------------------------------------------------------- data protection


async def test_purge_payloads_only_of_finished_leads_and_ids_stay(store: Store) -> None:
    await seed(store, "ok", "open", dests=["crm"])
    await seed(store, "new", dests=["crm"], now=T0 + 1000)
    await finish_as(store, "ok", "delivered")
    await finish_as(store, "new", "delivered", now=T0 + 1000)
    assert await store.purge_payloads(before=T0 + 500) == 1
    purged = await store.get_lead("ok")
    assert purged is not None and purged.payload is None
    assert (await store.get_lead("open")) is not None
    assert (await store.get_lead("open")).payload is not None  # type: ignore[union-attr]
    assert (await store.get_lead("new")).payload is not None  # type: ignore[union-attr]
    again = await store.ingest([lead("ok")], ["crm"], [], T0 + 2000)
    assert again.duplicates == ["ok"]


async def test_long_operator_jobs_run_in_bounded_transactions(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Purge and replay of many rows commit in parts of at most PART_ROWS rows,
    so a webhook's commit never waits behind one large transaction."""
    from bridge.store import base

    monkeypatch.setattr(base, "PART_ROWS", 4)
    ids = [f"m{i:02d}" for i in range(11)]
    await seed(store, *ids, dests=["crm"])  # one received_at for all: ties across parts
    claims = await store.claim(destination="crm", limit=100, lease_seconds=5, now=T0)
    dead = {c.lead_id for c in claims[:6]}
    outcomes = [
        done(c.delivery_id, c.lease_token, "dead" if c.lead_id in dead else "delivered")
        for c in claims
    ]
    assert await store.finish(outcomes) == [True] * 11
    parts: list[tuple[str, object]] = []

    def spy(name: str) -> None:
        real = getattr(store, name)

        async def part(*args: object, **kwargs: object) -> object:
            result = await real(*args, **kwargs)
            parts.append((name, result[0]))
            return result

        monkeypatch.setattr(store, name, part)

    spy("purge_payloads_part")
    spy("replay_part")
    assert await store.purge_payloads(before=T0 + 1) == 5
    assert [n for name, n in parts if name == "purge_payloads_part"] == [0, 2, 3]
    payloads = {i: (await store.get_lead(i)).payload for i in ids}  # type: ignore[union-attr]
    assert {i for i, p in payloads.items() if p is not None} == dead

    parts.clear()
    result = await store.replay(now=T0 + 100, dead_only=True)
    assert (result.requeued, result.refused_delivered, result.not_found) == (6, 0, 0)
    assert [r.requeued for _, r in parts] == [4, 2]  # type: ignore[attr-defined]
    statuses = {i: (await store.get_deliveries(i))[0].status for i in ids}
    assert statuses == {i: "pending" if i in dead else "delivered" for i in ids}

    parts.clear()
    forced = await store.replay(now=T0 + 200, destination="crm", force=True)
    assert (forced.requeued, forced.not_found) == (5, 0)
    assert len(parts) == 3
    assert (await store.replay(now=T0 + 300, dead_only=True)).not_found == 1


async def test_purge_keeps_leads_that_never_had_a_delivery(store: Store) -> None:
    await store.ingest([lead("lonely")], [], [], T0)  # no destination configured then
    assert await store.purge_payloads(before=T0 + 500) == 0
    assert (await store.get_lead("lonely")).payload is not None  # type: ignore[union-attr]


async def test_erase_by_email_removes_everything_of_that_person(store: Store) -> None:
    await store.ingest(
        [lead("a", "Ann@Example.com"), lead("b", "bob@example.com")], ["crm"], [], T0
    )
    await store.ingest([], [], [QuarantineIn("bad", '{"email": "ann@example.com"}')], T0)
    await finish_as(store, "a", "dead")
    report = await store.erase(email="ann@example.com")
    assert (report.leads, report.deliveries, report.attempts, report.quarantine) == (1, 1, 1, 1)
    assert report.lead_ids == ["a"]
    assert await store.get_lead("a") is None
    assert await store.get_attempts("a") == []
    assert await store.get_lead("b") is not None
    assert await store.list_quarantine() == []


async def test_erase_scrubs_the_address_from_other_leads_errors(store: Store) -> None:
    await store.ingest(
        [lead("a", "ann@example.com"), lead("b", "bob@example.com")], ["crm"], [], T0
    )
    claims = await store.claim(destination="crm", limit=10, lease_seconds=5, now=T0)
    (b,) = [c for c in claims if c.lead_id == "b"]
    await store.release([(c.delivery_id, c.lease_token) for c in claims if c.lead_id == "a"], T0)
    quoted = "HTTP 409: contact ANN@example.com already exists"
    await store.finish([done(b.delivery_id, b.lease_token, "dead", error=quoted)])
    await store.erase(email="ann@example.com")
    (kept,) = await store.get_deliveries("b")
    assert kept.status == "dead" and kept.last_error == "[erased: contained personal data]"


async def test_erase_by_lead_id(store: Store) -> None:
    await seed(store, "a", "b")
    report = await store.erase(lead_id="a")
    assert (report.leads, report.deliveries, report.lead_ids) == (1, 2, ["a"])
    assert await store.get_deliveries("a") == []
    assert len(await store.get_deliveries("b")) == 2
    assert (await store.erase(lead_id="a")).leads == 0


@pytest.mark.parametrize("size", [1, 300])
async def test_concurrent_ingests_each_get_their_own_answer(store: Store, size: int) -> None:
    import asyncio

    calls = [store.ingest([lead(f"l{i % size}")], ["crm"], [], T0) for i in range(2 * size)]
    results = await asyncio.gather(*calls)
    accepted = [r.accepted for r in results if r.accepted]
    assert sorted(x for a in accepted for x in a) == sorted(f"l{i}" for i in range(size))
    assert sum(len(r.duplicates) for r in results) == size
    assert (await store.status(T0)).leads == size


# ---------------------------------------------------------------------- shared helpers


def test_a_database_newer_than_the_code_is_refused() -> None:
    assert list(versions_to_apply(0, 2)) == [1, 2]
    assert list(versions_to_apply(2, 2)) == []
    with pytest.raises(StoreError, match="schema version 3 is newer than this lead-bridge"):
        versions_to_apply(3, 2)


def test_replay_choice_requeues_dead_and_skipped_and_delivered_only_with_force() -> None:
    rows = [(1, "dead"), (2, "delivered"), (3, "pending"), (4, "skipped")]
    ids, result = replay_choice(rows, force=False)
    assert ids == [1, 4]
    assert (result.requeued, result.refused_delivered, result.not_found) == (2, 1, 0)
    ids, result = replay_choice(rows, force=True)
    assert ids == [1, 2, 4] and result.requeued == 3
    assert replay_choice([], force=True)[1].not_found == 1


def test_only_the_sqlite_backend_takes_raw_bodies(store: Store) -> None:
    # The Store interface takes parsed leads; parsing a raw body is SQLite's
    # private fast path (its writer process), which intake detects.
    assert isinstance(store, BodyStore) == (store.dialect == "sqlite")
