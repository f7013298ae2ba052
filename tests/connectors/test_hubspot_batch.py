"""HubSpot batch upsert (issue 16): many leads per call, the answer split per lead."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from bridge.errors import PermanentError, RateLimited, RetryableError
from connectors.base import ApiUsage, DeliveryContext, DeliveryResult
from connectors.hubspot import MAX_BATCH, HubSpotConnector, HubSpotSettings
from tests.connectors.fake_hubspot import (
    UPSERT_PATH,
    FakeHubSpot,
    FakeResponse,
    rate_limited,
    server_error,
)

TOKEN = "pat-na1-test-token"


def item(n: int, email: str | None = None, **extra: Any) -> tuple[dict[str, Any], DeliveryContext]:
    lead_id = f"led_{n}"
    record = {"email": email if email is not None else f"user{n}@example.com", **extra}
    context = DeliveryContext(
        lead_id=lead_id, destination="hubspot", attempt=1, idempotency_key=f"key-{lead_id}"
    )
    return record, context


@pytest.fixture
def fake() -> Iterator[FakeHubSpot]:
    with FakeHubSpot(access_token=TOKEN, limit_per_10s=1000, daily_limit=250000) as server:
        yield server


@pytest.fixture
async def connector(fake: FakeHubSpot) -> AsyncIterator[HubSpotConnector]:
    settings = HubSpotSettings.model_validate(
        {"access_token": TOKEN, "host": fake.url, "timeout": 5, "allow_private": True}
    )
    c = HubSpotConnector("hubspot", settings)
    await c.startup()
    yield c
    await c.close()


def upserts(fake: FakeHubSpot) -> list[Any]:
    return [r.body for r in fake.requests if r.path == UPSERT_PATH]


async def test_one_call_for_many_leads_each_gets_its_contact(
    fake: FakeHubSpot, connector: HubSpotConnector
) -> None:
    assert connector.batch_limit() == MAX_BATCH == 100
    items = [item(n) for n in range(100)]
    results = await connector.send_batch(items)
    [body] = upserts(fake)
    assert len(body["inputs"]) == 100
    assert all(isinstance(r, DeliveryResult) and r.detail == "created" for r in results)
    ids = {fake.contacts[("email", f"user{n}@example.com")]["id"] for n in range(100)}
    assert [r.remote_id for r in results if isinstance(r, DeliveryResult)] == [
        fake.contacts[("email", f"user{n}@example.com")]["id"] for n in range(100)
    ]
    assert len(ids) == 100
    again = await connector.send_batch(items[:2])  # a retried batch updates
    assert [r.detail for r in again if isinstance(r, DeliveryResult)] == ["updated", "updated"]


async def test_a_207_is_split_back_to_the_leads_it_concerns(
    fake: FakeHubSpot, connector: HubSpotConnector
) -> None:
    fake.reject_input("user1@example.com", code="INVALID_EMAIL", name="email")
    results = await connector.send_batch([item(0), item(1), item(2)])
    assert len(upserts(fake)) == 1
    ok0, bad, ok2 = results
    assert isinstance(ok0, DeliveryResult) and isinstance(ok2, DeliveryResult)
    assert isinstance(bad, PermanentError) and bad.status_code == 207
    assert "VALIDATION_ERROR" in bad.message and "INVALID_EMAIL" in bad.message
    assert "propertyName=email" in bad.message
    assert "user1@example.com" not in bad.message  # HubSpot's message quotes the value


async def test_a_rate_limit_for_one_input_is_rate_limited(
    fake: FakeHubSpot, connector: HubSpotConnector
) -> None:
    fake.reject_input("user1@example.com", category="RATE_LIMITS", code="", name="email")
    _, limited = await connector.send_batch([item(0), item(1)])
    assert isinstance(limited, RateLimited)


async def test_a_lead_without_email_fails_alone(
    fake: FakeHubSpot, connector: HubSpotConnector
) -> None:
    results = await connector.send_batch([item(0), item(1, email=""), item(2)])
    assert isinstance(results[1], PermanentError) and "no email" in results[1].message
    [body] = upserts(fake)
    assert [i["id"] for i in body["inputs"]] == ["user0@example.com", "user2@example.com"]


async def test_two_leads_for_one_contact_go_in_consecutive_calls(
    fake: FakeHubSpot, connector: HubSpotConnector
) -> None:
    first = item(0, email="Ann@example.com", firstname="Ann")
    second = item(1, email="ann@example.com", firstname="Anne")
    results = await connector.send_batch([first, second, item(2)])
    assert all(isinstance(r, DeliveryResult) for r in results)
    bodies = upserts(fake)
    assert [len(b["inputs"]) for b in bodies] == [2, 1]  # HubSpot refuses duplicate ids
    assert bodies[1]["inputs"][0]["properties"]["firstname"] == "Anne"  # the later lead wins


@pytest.mark.parametrize(
    ("answer", "error"),
    [(rate_limited("TEN_SECONDLY_ROLLING"), RateLimited), (server_error(502), RetryableError)],
)
async def test_a_whole_call_failure_raises_for_all(
    fake: FakeHubSpot, connector: HubSpotConnector, answer: FakeResponse, error: type[Exception]
) -> None:
    fake.queue(answer)
    with pytest.raises(error):
        await connector.send_batch([item(0), item(1)])


async def test_the_ten_second_limit_answers_429(connector: HubSpotConnector) -> None:
    fake_limit = FakeHubSpot(access_token=TOKEN, limit_per_10s=2)
    with fake_limit:
        settings = HubSpotSettings.model_validate(
            {"access_token": TOKEN, "host": fake_limit.url, "timeout": 5, "allow_private": True}
        )
        c = HubSpotConnector("hubspot", settings)
        await c.startup()
        try:
            await c.send_batch([item(0), item(1)])
            await c.send_batch([item(2), item(3)])
            with pytest.raises(RateLimited, match="TEN_SECONDLY_ROLLING"):
                await c.send_batch([item(4), item(5)])
        finally:
            await c.close()
        assert (fake_limit.upsert_calls, fake_limit.rate_limited) == (2, 1)


async def test_daily_limit_headers_are_the_api_usage(
    fake: FakeHubSpot, connector: HubSpotConnector
) -> None:
    assert connector.api_usage() is None
    await connector.send_batch([item(0), item(1)])
    await connector.send(*item(2))
    assert connector.api_usage() == ApiUsage(used=2, limit=250000, window="daily")


async def test_leads_missing_from_the_answer_are_sent_alone(
    fake: FakeHubSpot, connector: HubSpotConnector
) -> None:
    fake.queue(FakeResponse(200, {"status": "COMPLETE", "results": []}))
    results = await connector.send_batch([item(0), item(1)])
    assert all(isinstance(r, DeliveryResult) for r in results)
    assert [len(b["inputs"]) for b in upserts(fake)] == [2, 1, 1]


async def test_through_the_engine_a_burst_is_one_call(
    fake: FakeHubSpot, make_runtime: Callable[..., Any]
) -> None:
    from bridge.engine import Engine
    from bridge.metrics import Metrics
    from bridge.store.base import LeadIn
    from bridge.store.sqlite import SQLiteStore
    from tests.conftest import make_lead
    from tests.waiting import eventually

    runtime = make_runtime(
        destinations=[
            {
                "name": "hubspot",
                "type": "hubspot",
                "settings": {"access_token": TOKEN, "host": fake.url, "allow_private": True},
                "mapping": {"email": "data.email", "firstname": "data.name"},
            }
        ],
        worker={"poll_interval": "10ms"},
    )
    store = SQLiteStore(runtime.config.storage.url)
    await store.open()
    engine = Engine(store, runtime.active, Metrics(), runtime.config.worker)
    try:
        leads = [
            LeadIn(f"led_{n}", json.dumps(make_lead(f"led_{n}", email=f"u{n}@example.com")))
            for n in range(60)
        ]
        await store.ingest(leads, ["hubspot"], [], time.time())
        await engine.start()

        async def delivered() -> bool:
            rows = [d for lead in leads for d in await store.get_deliveries(lead.id)]
            return all(d.status == "delivered" for d in rows)

        await eventually(delivered, "60 leads delivered")
        assert fake.upsert_calls == 1  # one commit, one claim, one call
        assert engine.destination_states()["hubspot"]["api_budget"]["used"] == 1
    finally:
        await engine.stop(2)
        await store.close()


async def test_every_request_of_a_batch_takes_a_rate_token(
    fake: FakeHubSpot, connector: HubSpotConnector
) -> None:
    """The engine takes the call's first token; each further request (a second
    round for a repeated contact, a lead resent alone) asks for its own."""
    tokens: list[int] = []

    async def gate() -> None:
        tokens.append(len(upserts(fake)))  # requests already sent when asked

    connector.request_gate = gate
    fake.queue(FakeResponse(200, {"status": "COMPLETE", "results": []}))
    # Two leads for the same contact (two rounds); the first answer accounts for none.
    results = await connector.send_batch([item(0), item(1, email="user0@example.com")])
    assert all(isinstance(r, DeliveryResult) for r in results)
    assert [len(b["inputs"]) for b in upserts(fake)] == [1, 1, 1]
    assert tokens == [1, 2]  # before the second round and before the lone resend


async def test_a_pause_stops_the_requests_left_in_a_batch(
    fake: FakeHubSpot, connector: HubSpotConnector
) -> None:
    async def paused() -> None:
        raise RateLimited("the destination is paused", retry_after=10)

    connector.request_gate = paused
    fake.queue(FakeResponse(200, {"status": "COMPLETE", "results": []}))
    results = await connector.send_batch([item(0)])
    assert isinstance(results[0], RateLimited)
    assert len(upserts(fake)) == 1  # the resend never left
