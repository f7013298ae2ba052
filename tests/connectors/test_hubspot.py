"""The HubSpot connector through hubspot-api-client against a fake HubSpot on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from pydantic import ValidationError

from bridge import __version__
from bridge.errors import AuthError, ConfigError, PermanentError, RateLimited, RetryableError
from connectors.base import DeliveryContext
from connectors.hubspot import (
    HubSpotConnector,
    HubSpotSettings,
    classify,
    contact_properties,
    until_next_hour,
)
from tests.connectors.fake_hubspot import (
    FakeHubSpot,
    FakeResponse,
    conflict,
    created,
    missing_scopes,
    multi_status_error,
    rate_limited,
    server_error,
    unauthorized,
    validation_error,
)
from tests.waiting import eventually

TOKEN = "pat-na1-test-token"
CONTEXT = DeliveryContext(
    lead_id="led_slp3mt0qxvIXYUIK",
    destination="hubspot",
    attempt=1,
    idempotency_key="led_slp3mt0qxvIXYUIK:hubspot",
)
RECORD = {"email": "john@example.com", "firstname": "John", "lastname": "Doe"}

MakeConnector = Callable[..., Awaitable[HubSpotConnector]]


@pytest.fixture
def fake() -> Iterator[FakeHubSpot]:
    with FakeHubSpot(access_token=TOKEN) as server:
        yield server


@pytest.fixture
async def make_connector(fake: FakeHubSpot) -> AsyncIterator[MakeConnector]:
    started: list[HubSpotConnector] = []

    async def make(**settings: Any) -> HubSpotConnector:
        values: dict[str, Any] = {
            "access_token": TOKEN,
            "host": fake.url,
            "timeout": 5,
            "allow_private": True,
        }
        values.update(settings)
        connector = HubSpotConnector("hubspot", HubSpotSettings.model_validate(values))
        await connector.startup()
        started.append(connector)
        return connector

    yield make
    for connector in started:
        await connector.close()


# --------------------------------------------------------------------------- success


async def test_upsert_by_email_creates_then_updates_the_same_contact(
    fake: FakeHubSpot, make_connector: MakeConnector
) -> None:
    connector = await make_connector()
    first = await connector.send(RECORD, CONTEXT)
    second = await connector.send({**RECORD, "jobtitle": "Agent"}, CONTEXT)

    assert (first.remote_id, first.status_code, first.detail) == ("101", 200, "created")
    assert (second.remote_id, second.detail) == ("101", "updated")
    assert fake.contacts[("email", "john@example.com")]["properties"]["jobtitle"] == "Agent"
    request = fake.requests[0]
    assert request.path == "/crm/v3/objects/contacts/batch/upsert"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["user-agent"] == f"lead-bridge/{__version__}"
    assert request.body == {
        "inputs": [{"idProperty": "email", "id": "john@example.com", "properties": RECORD}]
    }


async def test_custom_id_property_gets_the_lead_id(
    fake: FakeHubSpot, make_connector: MakeConnector
) -> None:
    connector = await make_connector(id_property="lead_bridge_id")
    result = await connector.send({"firstname": "John"}, CONTEXT)

    item = fake.requests[0].body["inputs"][0]
    assert item["idProperty"] == "lead_bridge_id"
    assert item["id"] == CONTEXT.lead_id
    assert item["properties"] == {"firstname": "John", "lead_bridge_id": CONTEXT.lead_id}
    assert result.remote_id == "101"


async def test_custom_id_property_keeps_a_mapped_value(
    fake: FakeHubSpot, make_connector: MakeConnector
) -> None:
    connector = await make_connector(id_property="lead_bridge_id")
    await connector.send({"lead_bridge_id": "custom-1"}, CONTEXT)

    assert fake.requests[0].body["inputs"][0]["id"] == "custom-1"


async def test_created_201_answer_is_a_success(
    fake: FakeHubSpot, make_connector: MakeConnector
) -> None:
    fake.queue(created("555"))
    connector = await make_connector()
    result = await connector.send(RECORD, CONTEXT)

    assert (result.remote_id, result.status_code, result.detail) == ("555", 201, "created")


async def test_concurrent_sends_share_one_client(
    fake: FakeHubSpot, make_connector: MakeConnector
) -> None:
    connector = await make_connector()
    api = connector._api
    records = [{"email": f"user{i}@example.com"} for i in range(10)]
    results = await asyncio.gather(*(connector.send(r, CONTEXT) for r in records))

    assert len({r.remote_id for r in results}) == 10
    assert connector._api is api


def test_property_values_become_hubspot_strings() -> None:
    record = {"a": True, "b": 250, "c": ["x", "y"], "d": None, "e": "text", "f": False}

    assert contact_properties(record) == {
        "a": "true",
        "b": "250",
        "c": "x;y",
        "e": "text",
        "f": "false",
    }


# --------------------------------------------------------------------------- refused records


async def test_missing_email_is_permanent_and_sends_nothing(
    fake: FakeHubSpot, make_connector: MakeConnector
) -> None:
    connector = await make_connector()
    with pytest.raises(PermanentError, match="no email"):
        await connector.send({"firstname": "John", "email": "  "}, CONTEXT)
    assert fake.requests == []


async def test_object_value_is_permanent(make_connector: MakeConnector) -> None:
    connector = await make_connector()
    with pytest.raises(PermanentError, match="'address' holds an object"):
        await connector.send({**RECORD, "address": {"city": "x"}}, CONTEXT)


async def test_invalid_option_is_permanent_and_names_the_property(
    fake: FakeHubSpot, make_connector: MakeConnector
) -> None:
    fake.queue(validation_error("numemployees", "1-10"))
    connector = await make_connector()
    with pytest.raises(PermanentError) as caught:
        await connector.send(RECORD, CONTEXT)

    assert caught.value.status_code == 400
    assert "VALIDATION_ERROR" in caught.value.message
    assert "numemployees: INVALID_OPTION" in caught.value.message
    # HubSpot's message quotes the value: it is never kept.
    assert "1-10" not in caught.value.message


async def test_conflict_is_permanent_with_hubspot_message(
    fake: FakeHubSpot, make_connector: MakeConnector
) -> None:
    fake.queue(conflict("1234"))
    connector = await make_connector()
    with pytest.raises(PermanentError, match=r"CONFLICT: existing contact id 1234$") as caught:
        await connector.send(RECORD, CONTEXT)
    assert caught.value.status_code == 409


async def test_multi_status_error_is_permanent_and_masks_emails(
    fake: FakeHubSpot, make_connector: MakeConnector
) -> None:
    fake.queue(multi_status_error(message="Email address john@example.com is invalid"))
    connector = await make_connector()
    with pytest.raises(PermanentError) as caught:
        await connector.send(RECORD, CONTEXT)

    assert caught.value.status_code == 207
    assert "propertyName=email" in caught.value.message
    assert "john" not in caught.value.message
    assert "example.com" not in caught.value.message


async def test_multi_status_rate_limit_is_rate_limited(
    fake: FakeHubSpot, make_connector: MakeConnector
) -> None:
    fake.queue(multi_status_error(category="RATE_LIMITS", message="Too many requests"))
    connector = await make_connector()
    with pytest.raises(RateLimited) as caught:
        await connector.send(RECORD, CONTEXT)
    assert caught.value.retry_after == 10.0


# --------------------------------------------------------------------------- rate limits


@pytest.mark.parametrize(
    ("response", "retry_after"),
    [
        (rate_limited("SECONDLY"), 10.0),
        (rate_limited("TEN_SECONDLY_ROLLING"), 10.0),
        (rate_limited("TEN_SECONDLY_ROLLING", retry_after="3"), 3.0),
    ],
)
async def test_short_rate_limits(
    fake: FakeHubSpot,
    make_connector: MakeConnector,
    response: FakeResponse,
    retry_after: float,
) -> None:
    fake.queue(response)
    connector = await make_connector()
    with pytest.raises(RateLimited) as caught:
        await connector.send(RECORD, CONTEXT)

    assert caught.value.status_code == 429
    assert caught.value.retry_after == retry_after
    assert str(response.body["policyName"]) in caught.value.message


async def test_daily_limit_waits_for_the_next_hour_probe(
    fake: FakeHubSpot, make_connector: MakeConnector
) -> None:
    fake.queue(rate_limited("DAILY"))
    connector = await make_connector()
    with pytest.raises(RateLimited, match="daily API limit") as caught:
        await connector.send(RECORD, CONTEXT)

    assert caught.value.retry_after is not None
    assert 60.0 <= caught.value.retry_after <= 3600.0


def test_until_next_hour() -> None:
    assert until_next_hour(now=7200.0 + 600) == 3000.0
    assert until_next_hour(now=7200.0 + 3590) == 60.0  # never hammer HubSpot
    assert until_next_hour(now=7200.0) == 60.0


# --------------------------------------------------------------------------- authentication


async def test_wrong_token_is_auth_error(make_connector: MakeConnector) -> None:
    connector = await make_connector(access_token="pat-wrong")
    with pytest.raises(AuthError, match="HubSpot refused the access token") as caught:
        await connector.send(RECORD, CONTEXT)
    assert caught.value.status_code == 401
    assert "INVALID_AUTHENTICATION" in caught.value.message


async def test_reauthenticate_rebuilds_the_client(
    fake: FakeHubSpot, make_connector: MakeConnector
) -> None:
    fake.queue(unauthorized())
    connector = await make_connector()
    with pytest.raises(AuthError):
        await connector.send(RECORD, CONTEXT)
    old = connector._api
    await connector.reauthenticate()

    assert connector._api is not old
    assert (await connector.send(RECORD, CONTEXT)).remote_id == "101"


async def test_reauthentication_keeps_the_thread_pool_and_queued_sends(
    fake: FakeHubSpot, make_connector: MakeConnector, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(HubSpotConnector, "max_threads", 2)
    connector = await make_connector()
    fake.queue(*[FakeResponse(201, created().body, delay=0.3) for _ in range(2)])
    # Two sends wait for their answer on the pool's two threads, three more are queued.
    sends = [
        asyncio.create_task(connector.send({**RECORD, "email": f"p{i}@example.com"}, CONTEXT))
        for i in range(5)
    ]
    await eventually(lambda: len(fake.requests) >= 2, "two sends at the fake")
    pool = connector._pool
    await connector.reauthenticate()
    results = await asyncio.gather(*sends, return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["DeliveryResult"] * 5
    assert connector._pool is pool


async def test_missing_scope_is_auth_error_naming_the_scope(
    fake: FakeHubSpot, make_connector: MakeConnector
) -> None:
    fake.queue(missing_scopes())
    connector = await make_connector()
    with pytest.raises(AuthError, match=r"crm\.objects\.contacts\.write") as caught:
        await connector.send(RECORD, CONTEXT)
    assert caught.value.status_code == 403


# --------------------------------------------------------------------------- transient failures


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_retryable(
    fake: FakeHubSpot, make_connector: MakeConnector, status: int
) -> None:
    fake.queue(server_error(status))
    connector = await make_connector()
    with pytest.raises(RetryableError) as caught:
        await connector.send(RECORD, CONTEXT)
    assert not isinstance(caught.value, RateLimited)
    assert caught.value.status_code == status


async def test_success_without_json_is_retryable(
    fake: FakeHubSpot, make_connector: MakeConnector
) -> None:
    fake.queue(FakeResponse(200, b"<html>proxy</html>"))
    connector = await make_connector()
    with pytest.raises(RetryableError, match="without a JSON body"):
        await connector.send(RECORD, CONTEXT)


async def test_connection_refused_is_retryable(make_connector: MakeConnector) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the connector connects
    connector = await make_connector(host=f"http://127.0.0.1:{port}")
    with pytest.raises(RetryableError, match="cannot reach HubSpot: NewConnectionError"):
        await connector.send(RECORD, CONTEXT)


async def test_timeout_applies_to_every_call(
    fake: FakeHubSpot, make_connector: MakeConnector
) -> None:
    fake.queue(FakeResponse(200, {}, delay=5.0))
    connector = await make_connector(timeout="300ms")
    with pytest.raises(RetryableError, match=r"cannot reach HubSpot: .*Timeout"):
        await connector.send(RECORD, CONTEXT)


async def test_urllib3_retries_are_off(make_connector: MakeConnector) -> None:
    connector = await make_connector()
    assert connector._api is not None
    retries = connector._api.api_client.configuration.retries

    assert retries.total == 0
    assert retries.redirect == 0


def test_tls_failure_reported_by_the_sdk_is_retryable() -> None:
    from hubspot.crm.contacts import ApiException

    error = classify(ApiException(status=0, reason="SSLError\ncertificate verify failed"))
    assert isinstance(error, RetryableError)
    assert error.message == "cannot reach HubSpot: SSLError"


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_https_with_ca_bundle(ca: trustme.CA, tmp_path: Path) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    with FakeHubSpot(access_token=TOKEN, ssl_context=context) as server:
        trusted = HubSpotSettings.model_validate(
            {"access_token": TOKEN, "host": server.url, "ca_bundle": bundle, "allow_private": True}
        )
        connector = HubSpotConnector("hubspot", trusted)
        await connector.startup()
        try:
            assert (await connector.send(RECORD, CONTEXT)).remote_id == "101"
        finally:
            await connector.close()

        untrusted = HubSpotConnector(
            "hubspot",
            HubSpotSettings.model_validate(
                {"access_token": TOKEN, "host": server.url, "timeout": 5, "allow_private": True}
            ),
        )
        await untrusted.startup()
        try:
            with pytest.raises(RetryableError, match="cannot reach HubSpot: SSLError"):
                await untrusted.send(RECORD, CONTEXT)
        finally:
            await untrusted.close()


# --------------------------------------------------------------------------- config and lifecycle


def test_check_fields() -> None:
    by_email = HubSpotSettings.model_validate({"access_token": TOKEN})
    by_lead = HubSpotSettings.model_validate({"access_token": TOKEN, "id_property": "lead_id"})

    assert HubSpotConnector.check_fields(by_email, ["email", "firstname", "hs_lead_status"]) == []
    assert HubSpotConnector.check_fields(by_email, ["email", "FirstName", "job title", "1x"]) == [
        (
            name,
            "not a HubSpot property internal name "
            "(lowercase letters, digits and underscores, starting with a letter)",
        )
        for name in ("FirstName", "job title", "1x")
    ]
    assert HubSpotConnector.check_fields(by_email, ["firstname"]) == [
        (
            "email",
            "no rule fills email, which HubSpot needs to find the contact (id_property: email)",
        )
    ]
    assert HubSpotConnector.check_fields(by_lead, ["firstname"]) == []


@pytest.mark.parametrize(
    ("settings", "location", "message"),
    [
        ({}, "access_token", "Field required"),
        ({"access_token": " "}, "access_token", "access token is empty"),
        ({"access_token": TOKEN, "id_property": "Lead-Id"}, "id_property", "internal name"),
        ({"access_token": TOKEN, "host": "api.hubapi.com"}, "host", "base URL"),
        ({"access_token": TOKEN, "timeout": 0}, "timeout", "greater than 0"),
        ({"access_token": TOKEN, "ca_bundle": "/nonexistent.pem"}, "ca_bundle", "does not exist"),
        ({"access_token": TOKEN, "token": "x"}, "token", "Extra inputs"),
    ],
)
def test_settings_errors_name_the_key(
    settings: dict[str, Any], location: str, message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        HubSpotSettings.model_validate(settings)
    error = caught.value.errors()[0]
    assert error["loc"] == (location,)
    assert message in str(error["msg"])


def test_settings_defaults() -> None:
    settings = HubSpotSettings.model_validate({"access_token": TOKEN, "host": "http://h:1/"})

    assert (settings.id_property, settings.host, settings.timeout, settings.ca_bundle) == (
        "email",
        "http://h:1",
        30.0,
        None,
    )
    assert HubSpotConnector.flow_defaults.concurrency == 10
    assert HubSpotConnector.flow_defaults.rate_per_second == 9  # see test_flow_defaults.py


async def test_send_after_close_is_an_error(make_connector: MakeConnector) -> None:
    connector = await make_connector()
    await connector.close()
    with pytest.raises(RuntimeError, match="was not started"):
        await connector.send(RECORD, CONTEXT)


def test_importing_the_connector_does_not_import_hubspot() -> None:
    code = "import sys, connectors.hubspot; print('hubspot' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


async def test_missing_sdk_names_the_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "hubspot", None)
    connector = HubSpotConnector("crm", HubSpotSettings.model_validate({"access_token": TOKEN}))
    with pytest.raises(ConfigError, match=r"'crm'.*pip install 'lead-bridge\[hubspot\]'"):
        await connector.startup()


def test_config_problems_name_their_key_path() -> None:
    from bridge.config import DestinationConfig
    from bridge.destinations import build_destination

    config = DestinationConfig.model_validate(
        {
            "name": "crm",
            "type": "hubspot",
            "settings": {"access_token": TOKEN, "timeout": "soon"},
            "mapping": {"FirstName": "data.first_name"},
        }
    )
    destination, problems, _ = build_destination(3, config)

    assert destination is None
    paths = [path for path, _ in problems]
    assert paths == ["destinations[3].settings.timeout"]
    config = config.model_copy(update={"settings": {"access_token": TOKEN}})
    destination, problems, _ = build_destination(3, config)
    assert [path for path, _ in problems] == [
        "destinations[3].mapping.FirstName",
        "destinations[3].mapping.email",
    ]


# --------------------------------------------------------------------------- address guard


async def test_a_host_on_a_private_address_is_refused(
    fake: FakeHubSpot, make_connector: MakeConnector
) -> None:
    connector = await make_connector(allow_private=False)
    with pytest.raises(PermanentError, match=r"HubSpot host '127\.0\.0\.1'.*non-public"):
        await connector.send(RECORD, CONTEXT)
    with pytest.raises(PermanentError, match=r"non-public address 127\.0\.0\.1"):
        await connector.check()
    assert fake.requests == []


# --------------------------------------------------------------------------- contract


async def test_contract(fake: FakeHubSpot) -> None:
    from bridge.errors import AuthError, PermanentError, RateLimited, RetryableError
    from connectors.testing import Scenario, check_connector
    from tests.connectors.fake_hubspot import (
        rate_limited,
        server_error,
        unauthorized,
        validation_error,
    )

    results = await check_connector(
        HubSpotConnector,
        {"access_token": TOKEN, "host": fake.url, "timeout": 5, "allow_private": True},
        RECORD,
        scenarios=[
            Scenario("created", lambda: None),
            Scenario("updated", lambda: None),
            Scenario("invalid", lambda: fake.queue(validation_error()), PermanentError),
            Scenario("throttled", lambda: fake.queue(rate_limited()), RateLimited),
            Scenario("refused", lambda: fake.queue(unauthorized()), AuthError),
            Scenario("failing", lambda: fake.queue(server_error(503)), RetryableError),
        ],
        accepted_fields=["email", "firstname", "lastname", "lead_score"],
        rejected_fields=["data.email", "FirstName"],
    )
    assert [r.detail for r in results] == ["created", "updated"]


def test_starting_the_connector_does_not_import_hubspot() -> None:
    """The SDK loads at the first call (on a pool thread), not on the start path."""
    code = """
import asyncio, sys
from connectors.hubspot import HubSpotConnector, HubSpotSettings
async def main():
    c = HubSpotConnector("crm", HubSpotSettings.model_validate({"access_token": "pat-x"}))
    await c.startup()
    await c.close()
asyncio.run(main())
print("hubspot" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
