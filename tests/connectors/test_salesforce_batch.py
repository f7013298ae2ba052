"""Salesforce sObject Collections upsert (issue 16) through simple-salesforce against the fake."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trustme

from bridge.errors import AuthError, PermanentError, RetryableError
from connectors.base import ApiUsage, DeliveryContext, DeliveryResult
from connectors.salesforce import (
    MAX_BATCH,
    SalesforceConnector,
    Settings,
    parse_limit_info,
    record_error,
)
from tests.connectors.fake_salesforce import FakeSalesforce

EXTERNAL = "Lead_Bridge_Id__c"


def item(n: int, **fields: Any) -> tuple[dict[str, Any], DeliveryContext]:
    record = {
        "LastName": f"Doe{n}",
        "Company": "Org",
        "Email": f"user{n}@example.com",
        **fields,
    }
    lead_id = f"led_{n}"
    return record, DeliveryContext(
        lead_id=lead_id, destination="sf", attempt=1, idempotency_key=lead_id
    )


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def fake(ca: trustme.CA) -> Iterator[FakeSalesforce]:
    with FakeSalesforce(ca) as server:
        yield server


@pytest.fixture
async def sf(fake: FakeSalesforce) -> AsyncIterator[SalesforceConnector]:
    conn = SalesforceConnector(
        "sf", Settings.model_validate(fake.settings(external_id_field=EXTERNAL))
    )
    await conn.startup()
    yield conn
    await conn.close()


async def test_one_collection_call_upserts_up_to_200_by_external_id(
    fake: FakeSalesforce, sf: SalesforceConnector
) -> None:
    assert sf.batch_limit() == MAX_BATCH == 200
    items = [item(n) for n in range(200)]
    results = await sf.send_batch(items)
    [call] = fake.api_calls("collection")
    assert call.method == "PATCH" and call.path.endswith(f"/composite/sobjects/Lead/{EXTERNAL}")
    assert call.body["allOrNone"] is False and len(call.body["records"]) == 200
    assert call.body["records"][0]["attributes"] == {"type": "Lead"}
    assert call.body["records"][0][EXTERNAL] == "led_0"
    assert all(isinstance(r, DeliveryResult) and r.detail == "created" for r in results)
    assert len(fake.records["Lead"]) == 200
    again = await sf.send_batch(items[:3])  # re-sent (a killed batch): updated, not duplicated
    assert [r.detail for r in again if isinstance(r, DeliveryResult)] == ["updated"] * 3
    assert len(fake.records["Lead"]) == 200


async def test_per_record_errors_are_classified_as_single_upserts(
    fake: FakeSalesforce, sf: SalesforceConnector
) -> None:
    fake.fail_record("led_1", "UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access")
    fake.fail_record("led_2", "DUPLICATE_VALUE", "duplicate value found: Email dup@x.io")
    results = await sf.send_batch([item(0), item(1), item(2), item(3, LastName="")])
    ok, locked, duplicate, missing = results
    assert isinstance(ok, DeliveryResult) and ok.status_code == 201
    assert type(locked) is RetryableError and "UNABLE_TO_LOCK_ROW" in locked.message
    assert isinstance(duplicate, PermanentError) and "DUPLICATE_VALUE" in duplicate.message
    assert "dup@x.io" not in duplicate.message  # Salesforce's message quotes values
    assert isinstance(missing, PermanentError)
    assert "REQUIRED_FIELD_MISSING (fields: LastName)" in missing.message
    assert len(fake.api_calls("collection")) == 1
    # The lock clears: led_1 alone again goes through.
    [retried] = await sf.send_batch([item(1)])
    assert isinstance(retried, DeliveryResult)


def test_record_error_uses_the_single_upsert_rules() -> None:
    limited = record_error([{"statusCode": "REQUEST_LIMIT_EXCEEDED", "message": "TotalRequests"}])
    assert limited.retryable and limited.__class__.__name__ == "RateLimited"
    session = record_error([{"statusCode": "INVALID_SESSION_ID", "message": "", "fields": []}])
    assert isinstance(session, AuthError)
    assert isinstance(record_error(None), PermanentError)


async def test_a_whole_call_failure_raises(fake: FakeSalesforce, sf: SalesforceConnector) -> None:
    fake.fail_next(503, "SERVER_UNAVAILABLE", "try later")
    with pytest.raises(RetryableError):
        await sf.send_batch([item(0), item(1)])
    fake.fail_next(400, "JSON_PARSER_ERROR", "bad")
    with pytest.raises(PermanentError):
        await sf.send_batch([item(0), item(1)])


async def test_sforce_limit_info_is_the_api_usage(
    fake: FakeSalesforce, sf: SalesforceConnector
) -> None:
    fake.api_limit = 1000
    fake.api_used = 899
    await sf.send_batch([item(0), item(1)])
    assert sf.api_usage() == ApiUsage(900, 1000, "rolling 24 h")
    await sf.send(*item(2))
    assert sf.api_usage() == ApiUsage(901, 1000, "rolling 24 h")
    assert parse_limit_info("api-usage=18/15000") == ApiUsage(18, 15000, "rolling 24 h")
    assert parse_limit_info("per-app-api-usage=1/10") is None
    assert parse_limit_info("api-usage=x/y") is None


async def test_without_external_id_no_batching(fake: FakeSalesforce) -> None:
    conn = SalesforceConnector("sf", Settings.model_validate(fake.settings()))
    assert conn.batch_limit() == 1


async def test_through_the_engine_the_budget_guard_pauses_at_the_hard_share(
    fake: FakeSalesforce, make_runtime: Any, caplog: pytest.LogCaptureFixture
) -> None:
    import json
    import logging
    import time

    from bridge.engine import Engine
    from bridge.metrics import Metrics
    from bridge.store.base import LeadIn
    from bridge.store.sqlite import SQLiteStore
    from tests.conftest import make_lead
    from tests.waiting import eventually

    fake.api_limit, fake.api_used = 1000, 950  # the next call makes it 951: above 95 %
    runtime = make_runtime(
        destinations=[
            {
                "name": "sf",
                "type": "salesforce",
                "settings": fake.settings(external_id_field=EXTERNAL),
                "mapping": {
                    "LastName": "data.name",
                    "Company": {"value": "Org"},
                    "Email": "data.email",
                },
            }
        ],
        worker={"poll_interval": "10ms"},
    )
    store = SQLiteStore(runtime.config.storage.url)
    await store.open()
    metrics = Metrics()
    engine = Engine(store, runtime.active, metrics, runtime.config.worker)
    caplog.set_level(logging.INFO, logger="lead_bridge.engine")
    try:
        leads = [
            LeadIn(f"led_{n}", json.dumps(make_lead(f"led_{n}", name=f"Doe{n}"))) for n in range(30)
        ]
        await store.ingest(leads, ["sf"], [], time.time())
        await engine.start()

        async def delivered() -> bool:
            rows = [d for lead in leads for d in await store.get_deliveries(lead.id)]
            return all(d.status == "delivered" for d in rows)

        await eventually(delivered, "30 leads delivered")
        assert len(fake.api_calls("collection")) == 1
        state = engine.destination_states()["sf"]
        assert state["paused"] and state["pause_reason"] == "api_budget"
        assert state["api_budget"]["state"] == "paused" and state["api_budget"]["used"] == 951
        assert "event=api_budget" in caplog.text and "state=paused" in caplog.text
        await store.ingest(
            [LeadIn("led_late", json.dumps(make_lead("led_late", name="Late")))],
            ["sf"],
            [],
            time.time(),
        )
        engine.wake()
        [late] = await store.get_deliveries("led_late")
        assert late.status == "pending" and len(fake.api_calls()) == 1  # paused: nothing sent
    finally:
        await engine.stop(2)
        await store.close()
