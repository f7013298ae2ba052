"""Connector.check(): each built-in against its local fake, never a lead sent."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from bridge.errors import AuthError, PermanentError, RetryableError
from connectors.base import CheckResult, Connector, ConnectorSettings
from connectors.hubspot import HubSpotConnector, HubSpotSettings
from connectors.jsonl import JsonlConnector, JsonlSettings
from connectors.salesforce import SalesforceConnector, Settings
from connectors.slack import SlackConnector, SlackSettings
from connectors.webhook import WebhookConnector, WebhookSettings
from tests.connectors.fake_http import Answer, FakeHTTP
from tests.connectors.fake_hubspot import UPSERT_PATH, FakeHubSpot
from tests.connectors.fake_salesforce import FakeSalesforce


@pytest.fixture
def http() -> Iterator[FakeHTTP]:
    with FakeHTTP() as server:
        yield server


async def run(connector: Connector) -> CheckResult:
    try:
        return await connector.check()
    finally:
        await connector.close()


async def test_default_check_says_there_is_none() -> None:
    class Custom(Connector):
        type_name = "custom"

    result = await Custom("c", ConnectorSettings()).check()
    assert result == CheckResult(None, "connector type 'custom' has no credentials check")


# --------------------------------------------------------------------------- jsonl


async def test_jsonl_writable_directory(tmp_path: Path) -> None:
    target = tmp_path / "out" / "leads.jsonl"
    result = await run(JsonlConnector("j", JsonlSettings(path=target)))
    assert result.ok is True
    assert str(target.parent) in result.detail
    assert list(target.parent.iterdir()) == []  # no probe left, the lead file untouched


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
async def test_jsonl_read_only_directory(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        result = await run(JsonlConnector("j", JsonlSettings(path=tmp_path / "leads.jsonl")))
    finally:
        tmp_path.chmod(0o700)
    assert result.ok is False
    assert "cannot write in" in result.detail and "Permission denied" in result.detail


# --------------------------------------------------------------------------- webhook


def webhook(url: str, **extra: object) -> WebhookConnector:
    return WebhookConnector("w", WebhookSettings.model_validate({"url": url, **extra}))


async def test_webhook_head_reaches_the_receiver_without_a_lead(http: FakeHTTP) -> None:
    http.queue(Answer(405))
    result = await run(
        webhook(http.url + "/hook?token=s3cret", allow_private=True, headers={"X-Api-Key": "k"})
    )
    assert result.ok is True and result.status_code == 405
    assert "is reachable" in result.detail and "s3cret" not in result.detail
    (seen,) = http.requests
    assert seen.method == "HEAD" and seen.body == b""
    assert seen.headers["x-api-key"] == "k" and "webhook-signature" not in seen.headers


@pytest.mark.parametrize(
    ("status", "says"),
    [(404, "check the URL"), (503, "the receiver fails"), (401, "check the destination's headers")],
)
async def test_webhook_refusals(http: FakeHTTP, status: int, says: str) -> None:
    http.queue(Answer(status))
    result = await run(webhook(http.url + "/hook", allow_private=True))
    assert result.ok is False and result.status_code == status
    assert says in result.detail


async def test_webhook_private_address_refused_by_the_guard(http: FakeHTTP) -> None:
    with pytest.raises(PermanentError, match="non-public address"):
        await run(webhook(http.url + "/hook"))
    assert http.requests == []


async def test_webhook_connection_refused_is_retryable() -> None:
    with FakeHTTP() as gone:
        url = gone.url
    with pytest.raises(RetryableError, match="connection failed"):
        await run(webhook(url + "/hook", allow_private=True, timeout=5))


# --------------------------------------------------------------------------- Slack


def slack(url: str) -> SlackConnector:
    settings = {"webhook_url": url, "allow_private": True}
    return SlackConnector("s", SlackSettings.model_validate(settings))


async def test_slack_reachable_without_posting(http: FakeHTTP) -> None:
    http.queue(Answer(400, b"invalid_payload"))
    result = await run(slack(http.url + "/services/T000/B000/XXXX"))
    assert result.ok is True and "nothing posted" in result.detail
    assert "XXXX" not in result.detail
    assert [r.method for r in http.requests] == ["GET"]


async def test_slack_revoked_webhook(http: FakeHTTP) -> None:
    http.queue(Answer(404, b"no_service"))
    result = await run(slack(http.url + "/services/T000/B000/XXXX"))
    assert result.ok is False and "revoked" in result.detail


async def test_slack_url_form_checked_before_any_request() -> None:
    result = await run(slack("https://hooks.slack.com/not-a-hook"))
    assert result.ok is False and "does not look like an incoming webhook" in result.detail


# --------------------------------------------------------------------------- HubSpot

TOKEN = "pat-na1-check-token"


@pytest.fixture
def hubspot() -> Iterator[FakeHubSpot]:
    with FakeHubSpot(access_token=TOKEN) as server:
        yield server


def hubspot_connector(host: str, token: str = TOKEN) -> HubSpotConnector:
    settings = HubSpotSettings.model_validate(
        {"access_token": token, "host": host, "timeout": 5, "allow_private": True}
    )
    return HubSpotConnector("h", settings)


async def test_hubspot_valid_token_with_scope(hubspot: FakeHubSpot) -> None:
    result = await run(hubspot_connector(hubspot.url))
    assert result.ok is True
    assert "account 4242" in result.detail and TOKEN not in result.detail
    assert all(r.path != UPSERT_PATH for r in hubspot.requests)


async def test_hubspot_invalid_token(hubspot: FakeHubSpot) -> None:
    result = await run(hubspot_connector(hubspot.url, token="pat-na1-wrong"))
    assert result.ok is False and result.status_code == 400
    assert "refused the access token" in result.detail and "pat-na1-wrong" not in result.detail


async def test_hubspot_token_without_write_scope(hubspot: FakeHubSpot) -> None:
    hubspot.scopes = ("crm.objects.contacts.read",)
    result = await run(hubspot_connector(hubspot.url))
    assert result.ok is False
    assert "lacks the scope crm.objects.contacts.write" in result.detail


# --------------------------------------------------------------------------- Salesforce


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def salesforce(ca: trustme.CA) -> Iterator[FakeSalesforce]:
    with FakeSalesforce(ca) as server:
        yield server


async def test_salesforce_token_and_limits(salesforce: FakeSalesforce) -> None:
    connector = SalesforceConnector("sf", Settings.model_validate(salesforce.settings()))
    result = await run(connector)
    assert result.ok is True and result.status_code == 200
    assert "14990 of 15000 daily API requests left" in result.detail
    assert salesforce.calls("sobjects")[0].path.endswith("/limits/")
    assert not any(r.method in ("POST", "PATCH") for r in salesforce.calls("sobjects"))


async def test_salesforce_refused_credentials(salesforce: FakeSalesforce) -> None:
    settings = salesforce.settings()
    settings["auth"] = {**settings["auth"], "client_secret": "wrong"}
    connector = SalesforceConnector("sf", Settings.model_validate(settings))
    with pytest.raises((AuthError, PermanentError)):
        await run(connector)
    assert salesforce.calls("sobjects") == []
