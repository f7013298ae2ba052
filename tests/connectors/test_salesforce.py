"""The Salesforce connector through simple-salesforce against a local HTTPS fake."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import trustme
from pydantic import ValidationError

from bridge import __version__
from bridge.errors import AuthError, PermanentError, RateLimited, RetryableError
from connectors.base import DeliveryContext
from connectors.salesforce import SalesforceConnector, Settings, classify
from connectors.testing import Scenario, check_connector
from tests.connectors.fake_salesforce import JWT_GRANT, FakeSalesforce
from tests.waiting import eventually

EXTERNAL = "Lead_Bridge_Id__c"
LEAD = {"FirstName": "John", "LastName": "Doe", "Company": "Org", "Email": "john@example.com"}

Factory = Callable[..., Awaitable[SalesforceConnector]]


def ctx(lead_id: str = "led_slp3mt0qxvIXYUIK") -> DeliveryContext:
    return DeliveryContext(lead_id=lead_id, destination="sf", attempt=1, idempotency_key=lead_id)


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def fake(ca: trustme.CA) -> Iterator[FakeSalesforce]:
    with FakeSalesforce(ca) as server:
        yield server


@pytest.fixture
async def connector(fake: FakeSalesforce) -> AsyncIterator[Factory]:
    opened: list[SalesforceConnector] = []

    async def make(mode: str = "client_credentials", **overrides: Any) -> SalesforceConnector:
        settings = Settings.model_validate(fake.settings(mode, **overrides))
        conn = SalesforceConnector("sf", settings)
        opened.append(conn)
        await conn.startup()
        return conn

    yield make
    for conn in opened:
        await conn.close()


# --------------------------------------------------------------------------- import


def test_importing_the_connector_does_not_import_the_sdk() -> None:
    code = (
        "import sys, connectors.salesforce\n"
        "assert 'simple_salesforce' not in sys.modules, 'simple_salesforce imported'\n"
        "assert 'requests' not in sys.modules, 'requests imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


async def test_connector_contract(fake: FakeSalesforce) -> None:
    def fail(status: int, code: str, message: str = "") -> Callable[[], None]:
        return lambda: fake.fail_next(status, code, message, fields=["Email"])

    results = await check_connector(
        SalesforceConnector,
        fake.settings(external_id_field=EXTERNAL),
        LEAD,
        scenarios=[
            Scenario("created", lambda: None),
            Scenario("updated", lambda: None),
            Scenario(
                "invalid",
                fail(400, "INVALID_EMAIL_ADDRESS", "bad: john@example.com"),
                PermanentError,
            ),
            Scenario("locked", fail(400, "UNABLE_TO_LOCK_ROW"), RetryableError),
            Scenario("limit", fail(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests"), RateLimited),
            Scenario("expired", fake.expire_tokens, AuthError),
            Scenario("dropped", fake.drop_next, RetryableError),
        ],
        accepted_fields=["FirstName", "LastName", "Company", "Email", "Lead_Score__c"],
        rejected_fields=["data.email", "Id", EXTERNAL],
    )
    assert [r.status_code for r in results] == [201, 200]
    assert fake.grants == ["client_credentials"]  # a second startup() reuses the token


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("auth", "missing"),
    [
        ({"mode": "client_credentials", "client_id": "x"}, "client_secret"),
        ({"mode": "jwt", "client_id": "x"}, "username, private_key_file"),
        ({"mode": "password", "client_id": "x", "client_secret": "s", "username": "u"}, "password"),
        ({"mode": "token", "access_token": ""}, "access_token"),
    ],
)
def test_each_auth_mode_names_what_it_misses(auth: dict[str, Any], missing: str) -> None:
    with pytest.raises(ValidationError) as info:
        Settings.model_validate({"auth": auth, "instance_url": "https://x.my.salesforce.com"})
    assert f"missing or empty: {missing}" in str(info.value)


def test_token_mode_needs_instance_url() -> None:
    with pytest.raises(ValidationError, match="instance_url is required"):
        Settings.model_validate({"auth": {"mode": "token", "access_token": "t"}})


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("login_url", "http://login.salesforce.com", "https://"),
        ("instance_url", "https://proxy.example.com/salesforce", "no path"),
        ("api_version", "sixty", "API version"),
        ("sobject", "Lead Object", "not a Salesforce API name"),
        ("external_id_field", "Lead-Id", "not a Salesforce API name"),
        ("assignment_rule", "rule-1", "AssignmentRule id"),
        ("timeout", 0, "positive"),
        ("sandbox", True, "Extra inputs"),
    ],
)
def test_bad_settings_are_named(key: str, value: Any, problem: str) -> None:
    data = {"auth": {"mode": "client_credentials", "client_id": "i", "client_secret": "s"}}
    with pytest.raises(ValidationError) as info:
        Settings.model_validate(data | {key: value})
    assert problem in str(info.value)
    assert key in str(info.value)


def test_settings_defaults_and_coercions() -> None:
    settings = Settings.model_validate(
        {
            "auth": {"mode": "client_credentials", "client_id": "i", "client_secret": "s"},
            "api_version": 61.0,  # YAML reads it as a number
            "assignment_rule": "true",  # ${VAR} expansion gives strings
            "timeout": "5s",
        }
    )
    assert settings.api_version == "61.0"
    assert settings.assignment_rule is True
    assert settings.timeout == 5.0
    assert settings.login_url == "https://login.salesforce.com"
    assert settings.sobject == "Lead"
    assert settings.external_id_field is None
    assert settings.session_headers() == {"Sforce-Auto-Assign": "TRUE"}


def test_check_fields_rejects_bad_names_id_and_the_external_id() -> None:
    settings = Settings.model_validate(
        {
            "auth": {"mode": "client_credentials", "client_id": "i", "client_secret": "s"},
            "external_id_field": EXTERNAL,
        }
    )
    fields = ["LastName", "ns__Score__c", "data.email", "Id", "lead_bridge_id__c", "_x", "A__"]
    problems = dict(SalesforceConnector.check_fields(settings, fields))
    assert set(problems) == {"data.email", "Id", "lead_bridge_id__c", "_x", "A__"}
    assert "set to the lead id automatically" in problems["lead_bridge_id__c"]
    assert "not a Salesforce field API name" in problems["data.email"]


# --------------------------------------------------------------------------- success


async def test_upsert_creates_then_updates(fake: FakeSalesforce, connector: Factory) -> None:
    conn = await connector(external_id_field=EXTERNAL)
    created = await conn.send(LEAD | {EXTERNAL: "ignored"}, ctx())
    assert created.status_code == 201 and created.detail == "created"
    assert created.remote_id is not None and created.remote_id.startswith("00Q")

    updated = await conn.send(LEAD | {"Company": "Org 2"}, ctx())
    assert (updated.status_code, updated.remote_id) == (200, created.remote_id)
    assert fake.records["Lead"][created.remote_id]["Company"] == "Org 2"

    call = fake.calls()[0]
    assert call.method == "PATCH"
    assert call.path == f"/services/data/v62.0/sobjects/Lead/{EXTERNAL}/led_slp3mt0qxvIXYUIK"
    assert call.body == LEAD  # the external id travels in the path only
    assert call.header(
        "Authorization",
    ).startswith("Bearer 00D")  # type: ignore[union-attr]
    assert fake.grants == ["client_credentials"]
    # the token request and the sObject calls alike
    assert {r.header("User-Agent") for r in fake.requests} == {f"lead-bridge/{__version__}"}


async def test_update_without_body_has_no_remote_id(ca: trustme.CA) -> None:
    with FakeSalesforce(ca, update_status_204=True) as fake:
        conn = SalesforceConnector(
            "sf", Settings.model_validate(fake.settings(external_id_field=EXTERNAL))
        )
        await conn.startup()
        try:
            await conn.send(LEAD, ctx())
            result = await conn.send(LEAD, ctx())
        finally:
            await conn.close()
    assert (result.status_code, result.remote_id, result.detail) == (204, None, "updated")


async def test_lead_id_is_url_quoted(fake: FakeSalesforce, connector: Factory) -> None:
    conn = await connector(external_id_field=EXTERNAL)
    await conn.send(LEAD, ctx("a/b c?"))
    paths = [c.path.rsplit("/", 1)[1] for c in fake.calls()]
    assert paths == ["a%2Fb%20c%3F"]
    assert [r[EXTERNAL] for r in fake.records["Lead"].values()] == ["a/b c?"]
    with pytest.raises(PermanentError, match="cannot be used as an external id"):
        await conn.send(LEAD, ctx(".."))


async def test_plain_create_without_external_id(fake: FakeSalesforce, connector: Factory) -> None:
    conn = await connector(sobject="Lead")
    result = await conn.send(LEAD, ctx())
    assert result.status_code == 201 and result.remote_id in fake.records["Lead"]
    call = fake.calls()[0]
    assert (call.method, call.path) == ("POST", "/services/data/v62.0/sobjects/Lead/")


@pytest.mark.parametrize("mode", ["password", "jwt", "token"])
async def test_every_auth_mode_delivers(
    fake: FakeSalesforce, connector: Factory, mode: str
) -> None:
    conn = await connector(mode, external_id_field=EXTERNAL)
    result = await conn.send(LEAD, ctx())
    assert result.status_code == 201
    expected = {"password": ["password"], "jwt": [JWT_GRANT], "token": []}[mode]
    assert fake.grants == expected


async def test_optional_headers_survive_reauthentication(
    fake: FakeSalesforce, connector: Factory
) -> None:
    conn = await connector(
        external_id_field=EXTERNAL, assignment_rule="01Q5g000000AbCdEAF", allow_duplicates=True
    )
    await conn.send(LEAD, ctx())
    fake.expire_tokens()
    with pytest.raises(AuthError):
        await conn.send(LEAD, ctx())
    await conn.reauthenticate()
    await conn.send(LEAD, ctx())
    for call in (fake.calls()[0], fake.calls()[-1]):
        assert call.header("Sforce-Auto-Assign") == "01Q5g000000AbCdEAF"
        assert call.header("Sforce-Duplicate-Rule-Header") == "allowSave=true"


async def test_ca_bundle_wins_over_requests_ca_bundle(
    fake: FakeSalesforce, connector: Factory, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other))
    monkeypatch.setenv("SSL_CERT_FILE", str(other))
    conn = await connector(external_id_field=EXTERNAL)
    assert (await conn.send(LEAD, ctx())).status_code == 201


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "code",
    [
        "REQUIRED_FIELD_MISSING",
        "FIELD_INTEGRITY_EXCEPTION",
        "INVALID_EMAIL_ADDRESS",
        "STRING_TOO_LONG",
        "DUPLICATES_DETECTED",
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
    ],
)
async def test_validation_errors_are_permanent(
    fake: FakeSalesforce, connector: Factory, code: str
) -> None:
    conn = await connector(external_id_field=EXTERNAL)
    fake.fail_next(400, code, "Salesforce says no", fields=["Email"])
    with pytest.raises(PermanentError) as info:
        await conn.send(LEAD, ctx())
    assert info.value.message == f"Salesforce HTTP 400: {code} (fields: Email)"
    assert info.value.status_code == 400


async def test_stored_message_never_holds_record_values(
    fake: FakeSalesforce, connector: Factory
) -> None:
    conn = await connector(external_id_field=EXTERNAL)
    with pytest.raises(PermanentError) as info:
        await conn.send(LEAD | {"Email": "not-an-address-7"}, ctx())
    assert "not-an-address-7" not in info.value.message
    # Only the code and the field: Salesforce's message quotes the value.
    assert info.value.message.endswith("INVALID_EMAIL_ADDRESS (fields: Email)")
    assert "invalid email address" not in info.value.message
    with pytest.raises(PermanentError) as info:
        await conn.send({"FirstName": "Zebediah"}, ctx())
    assert "REQUIRED_FIELD_MISSING" in info.value.message
    assert "(fields: LastName, Company)" in info.value.message


@pytest.mark.parametrize(
    "content",
    [
        # Salesforce quotes values in forms a scrubber would miss: case, fragments.
        [
            {
                "errorCode": "DUPLICATE_VALUE",
                "message": "duplicate value found: Email__c duplicates value on record "
                "with id: 00Q000000000001: ANN.QUATTLEBAUM@X.IO",
                "fields": ["Email__c"],
            }
        ],
        [{"errorCode": "STRING_TOO_LONG", "message": "Company: data value too large: Quattle"}],
        b"<html>Quattlebaum ann.quattlebaum@x.io</html>",  # not Salesforce's error shape
        [{"errorCode": "Quattlebaum ann.quattlebaum@x.io", "fields": ["ann@x.io"]}],
    ],
)
def test_error_texts_hold_codes_and_field_names_only(content: Any) -> None:
    from simple_salesforce.exceptions import SalesforceGeneralError

    error = classify(SalesforceGeneralError("https://x/y", 400, "Lead", content))
    text = error.message.lower()
    assert error.message.startswith("Salesforce HTTP 400: ")
    for value in ("quattle", "ann", "x.io", "00q000000000001"):
        assert value not in text, error.message


async def test_several_matching_records_is_permanent(
    fake: FakeSalesforce, connector: Factory
) -> None:
    for _ in range(2):
        fake.add_record("Lead", LEAD | {EXTERNAL: "led_1"})
    conn = await connector(external_id_field=EXTERNAL)
    with pytest.raises(PermanentError) as info:
        await conn.send(LEAD, ctx("led_1"))
    assert info.value.status_code == 300
    assert "2 Lead records share this lead's external id" in info.value.message


@pytest.mark.parametrize(
    ("status", "code", "message", "kind", "retry_after"),
    [
        (400, "UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access", RetryableError, None),
        (500, "UNKNOWN_EXCEPTION", "An unexpected error occurred", RetryableError, None),
        (503, "SERVER_UNAVAILABLE", "Server unavailable", RetryableError, None),
        (403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.", RateLimited, 3600.0),
        (403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit", RateLimited, 60.0),
        (403, "INSUFFICIENT_ACCESS", "insufficient access rights", AuthError, None),
        (404, "NOT_FOUND", "The requested resource does not exist", PermanentError, None),
        (429, "", "", RateLimited, None),
    ],
)
async def test_statuses_are_classified(
    fake: FakeSalesforce,
    connector: Factory,
    status: int,
    code: str,
    message: str,
    kind: type[Exception],
    retry_after: float | None,
) -> None:
    conn = await connector(external_id_field=EXTERNAL)
    fake.fail_next(status, code, message)
    with pytest.raises(kind) as info:
        await conn.send(LEAD, ctx())
    error = info.value
    assert type(error) is kind
    assert getattr(error, "status_code", None) == status
    assert getattr(error, "retry_after", None) == retry_after
    # the attempt after a retryable error goes through
    assert (await conn.send(LEAD, ctx())).status_code == 201


async def test_dropped_connection_is_retryable(fake: FakeSalesforce, connector: Factory) -> None:
    conn = await connector(external_id_field=EXTERNAL)
    fake.drop_next()
    with pytest.raises(RetryableError, match="connection failed"):
        await conn.send(LEAD, ctx())


async def test_every_call_has_a_timeout(fake: FakeSalesforce, connector: Factory) -> None:
    # The timeout also bounds start-up's token fetch: 1 s is far beyond a loopback
    # answer on a busy machine (0.2 s was not), the late answer (3 s) far beyond it.
    conn = await connector(external_id_field=EXTERNAL, timeout=1.0)
    fake.delay_next(3.0)
    with pytest.raises(RetryableError, match="timed out"):
        await conn.send(LEAD, ctx())


def test_classify_refuses_foreign_exceptions() -> None:
    with pytest.raises(TypeError, match="not a Salesforce error"):
        classify(KeyError("x"))


# --------------------------------------------------------------------------- auth


async def test_token_expiring_mid_run(fake: FakeSalesforce, connector: Factory) -> None:
    conn = await connector(external_id_field=EXTERNAL)
    assert (await conn.send(LEAD, ctx("led_1"))).status_code == 201
    fake.expire_tokens()
    # what the engine does: AuthError -> reauthenticate() once -> retry once
    with pytest.raises(AuthError) as info:
        await conn.send(LEAD, ctx("led_2"))
    assert info.value.message == "Salesforce HTTP 401: INVALID_SESSION_ID"
    await conn.reauthenticate()
    assert (await conn.send(LEAD, ctx("led_2"))).status_code == 201
    assert fake.grants == ["client_credentials", "client_credentials"]


async def test_concurrent_auth_failures_refresh_once(
    fake: FakeSalesforce, connector: Factory
) -> None:
    conn = await connector(external_id_field=EXTERNAL)
    fake.expire_tokens()
    refused = 0

    async def deliver(lead_id: str) -> int | None:
        # What the engine does, in one task per delivery.
        nonlocal refused
        try:
            return (await conn.send(LEAD, ctx(lead_id))).status_code
        except AuthError:
            refused += 1
            await conn.reauthenticate()
            return (await conn.send(LEAD, ctx(lead_id))).status_code

    sent = await asyncio.gather(*(deliver(f"led_{i}") for i in range(5)))
    assert set(sent) == {201} and refused >= 1
    assert fake.grants == ["client_credentials", "client_credentials"]


async def test_a_refused_fresh_token_is_refreshed_despite_a_late_stale_refusal(
    fake: FakeSalesforce, connector: Factory
) -> None:
    conn = await connector(external_id_field=EXTERNAL)
    fake.delay_next(3.0)  # this send goes out with token 1 and is answered late
    late = asyncio.create_task(conn.send(LEAD, ctx("led_late")))
    await eventually(lambda: bool(fake.calls()), "the first send at the fake")
    fake.expire_tokens()
    with pytest.raises(AuthError):
        await conn.send(LEAD, ctx("led_1"))
    await conn.reauthenticate()  # token 2
    assert (await conn.send(LEAD, ctx("led_1"))).status_code == 201
    fake.expire_tokens()
    with pytest.raises(AuthError):
        await conn.send(LEAD, ctx("led_2"))  # refused with token 2
    assert not late.done(), "the late answer must come after the refusal of token 2"
    with pytest.raises(AuthError):
        await late  # token 1's refusal arrives now
    # One shared "stale token" slot would now hold token 1 and skip the refresh,
    # dead-lettering led_2 as "check credentials".
    await conn.reauthenticate()
    assert (await conn.send(LEAD, ctx("led_2"))).status_code == 201
    assert fake.grants == ["client_credentials"] * 3


async def test_token_mode_cannot_reauthenticate(fake: FakeSalesforce, connector: Factory) -> None:
    conn = await connector("token", external_id_field=EXTERNAL)
    fake.expire_tokens()
    with pytest.raises(AuthError):
        await conn.send(LEAD, ctx())
    with pytest.raises(NotImplementedError, match="cannot renew"):
        await conn.reauthenticate()


@pytest.mark.parametrize(
    ("setup", "kind", "text"),
    [
        ("bad_secret", AuthError, "invalid_client: authentication failure"),
        ("unavailable", RetryableError, "HTTP 503"),
        ("drop", RetryableError, "connection failed"),
    ],
)
async def test_token_endpoint_failures(
    fake: FakeSalesforce, connector: Factory, setup: str, kind: type[Exception], text: str
) -> None:
    overrides: dict[str, Any] = {}
    if setup == "bad_secret":
        auth = fake.settings()["auth"] | {"client_secret": "wrong"}
        overrides["auth"] = auth
    elif setup == "unavailable":
        fake.fail_next(503, "temporarily_unavailable", "maintenance", target="token")
    else:
        fake.drop_next(target="token")
    with pytest.raises(kind, match=text) as info:
        await connector(**overrides)
    assert "wrong" not in str(info.value)


# --------------------------------------------------------------------------- address guard


async def test_token_endpoint_on_a_private_address_is_refused(fake: FakeSalesforce) -> None:
    conn = SalesforceConnector("sf", Settings.model_validate(fake.settings(allow_private=False)))
    try:
        with pytest.raises(PermanentError, match=r"non-public address 127\.0\.0\.1"):
            await conn.startup()
            await conn.send(LEAD, ctx())
    finally:
        await conn.close()
    assert fake.requests == []


async def test_instance_on_a_private_address_is_refused(fake: FakeSalesforce) -> None:
    # mode token: no token request; the record goes through requests/urllib3.
    settings = fake.settings("token", allow_private=False, external_id_field=EXTERNAL)
    conn = SalesforceConnector("sf", Settings.model_validate(settings))
    try:
        await conn.startup()
        with pytest.raises(PermanentError, match=r"non-public address 127\.0\.0\.1"):
            await conn.send(LEAD, ctx())
    finally:
        await conn.close()
    assert fake.requests == []


def test_the_requests_session_never_follows_redirects() -> None:
    from connectors.salesforce import _http_session
    from tests.connectors.fake_http import Answer, FakeHTTP

    with FakeHTTP() as target, FakeHTTP() as redirecting:
        redirecting.queue(Answer(302, b"", {"Location": target.url + "/inside"}))
        settings = Settings.model_validate(
            {"auth": {"mode": "token", "access_token": "t"}, "instance_url": "https://x.test"}
        )
        session = _http_session(settings)
        try:
            response = session.get(redirecting.url + "/services/data")
        finally:
            session.close()
        assert response.status_code == 302
        assert target.requests == []


def test_starting_the_connector_does_not_import_the_sdk() -> None:
    """simple-salesforce and requests load at the first call, not on the start path."""
    import subprocess
    import sys

    code = """
import asyncio, sys
from connectors.salesforce import SalesforceConnector, Settings
async def main():
    settings = Settings.model_validate({
        "auth": {"mode": "token", "access_token": "00Dx!y"},
        "instance_url": "https://example.my.salesforce.com",
    })
    c = SalesforceConnector("crm", settings)
    await c.startup()
    await c.close()
asyncio.run(main())
print(sorted(m for m in ("simple_salesforce", "requests") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
