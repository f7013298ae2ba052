"""The admin API's erasure: a preview that changes nothing, then an erase that
needs ``confirm: true``; answers and logs hold counts and lead ids only."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from bridge.operations.audit import list_audit
from bridge.store.base import LeadIn, QuarantineIn
from tests.conftest import AppHarness, make_lead

TOKEN = "admin-token-for-erase-tests"
AUTH = {"authorization": f"Bearer {TOKEN}"}
T0 = 1_700_000_000.0
EMAIL = "ann@x.io"


@pytest.fixture
async def admin(make_app: Callable[..., Any]) -> AppHarness:
    harness: AppHarness = await make_app(admin={"tokens": [TOKEN]})
    leads = [
        LeadIn("led_ann", json.dumps(make_lead("led_ann", email=EMAIL))),
        LeadIn("led_joann", json.dumps(make_lead("led_joann", email="joann@x.io"))),
    ]
    bad = [QuarantineIn("bad", json.dumps({"email": EMAIL}))]
    await harness.store.ingest(leads, ["crm"], bad, now=T0)
    return harness


async def test_preview_counts_and_changes_nothing(admin: AppHarness) -> None:
    response = await admin.client.post("/admin/erase/preview", json={"email": EMAIL}, headers=AUTH)

    assert response.status_code == 200
    assert response.json() == {
        "leads": 1,
        "deliveries": 1,
        "attempts": 0,
        "quarantine": 1,
        "errors_scrubbed": 0,
        "lead_ids": ["led_ann"],
        "dry_run": True,
        "files_clean": True,
    }
    assert await admin.store.get_lead("led_ann") is not None


async def test_erase_needs_confirm(admin: AppHarness) -> None:
    response = await admin.client.post("/admin/erase", json={"email": EMAIL}, headers=AUTH)

    assert response.status_code == 400
    assert "confirm: send true to erase" in response.json()["message"]
    assert await admin.store.get_lead("led_ann") is not None


async def test_erase_with_confirm_removes_and_audits(
    admin: AppHarness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    response = await admin.client.post(
        "/admin/erase", json={"email": EMAIL, "confirm": True}, headers=AUTH
    )

    assert response.status_code == 200
    body = response.json()
    assert (body["leads"], body["quarantine"], body["dry_run"]) == (1, 1, False)
    assert await admin.store.get_lead("led_ann") is None
    assert await admin.store.get_lead("led_joann") is not None
    (entry,) = await list_audit(admin.store, action="erase")
    assert (entry.actor, entry.target, entry.detail["leads"]) == (
        "api:admin.tokens[0]",
        "by email",
        1,
    )
    assert "event=admin_erase by=email leads=1" in caplog.text
    assert EMAIL not in caplog.text and EMAIL not in json.dumps(entry.detail)
    # the provider's re-send is a duplicate now
    again = await admin.post([make_lead("led_ann", email=EMAIL)])
    assert again.json()["duplicates"] == 1 and await admin.store.get_lead("led_ann") is None


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({}, "give exactly one of email or lead_id"),
        ({"email": EMAIL, "lead_id": "led_ann"}, "give exactly one of email or lead_id"),
        ({"email": "no-at-sign"}, "email: expected an e-mail address"),
        ({"lead_id": ""}, "lead_id: String should have at least 1 character"),
        ({"lead_id": "x", "other": 1}, "body: unknown field; accepted:"),
    ],
)
async def test_bad_requests_name_the_field_and_echo_nothing(
    admin: AppHarness, body: dict[str, Any], fragment: str
) -> None:
    for path in ("/admin/erase/preview", "/admin/erase"):
        response = await admin.client.post(path, json=body, headers=AUTH)
        assert response.status_code == 400
        message = response.json()["message"]
        assert fragment in message
        assert "no-at-sign" not in message


async def test_erase_needs_the_token(admin: AppHarness) -> None:
    for path in ("/admin/erase/preview", "/admin/erase"):
        response = await admin.client.post(path, json={"email": EMAIL, "confirm": True})
        assert response.status_code == 401
    assert await admin.store.get_lead("led_ann") is not None


async def test_openapi_describes_erase(admin: AppHarness) -> None:
    document = (await admin.client.get("/admin/openapi.json")).json()
    assert document["paths"]["/admin/erase"]["post"]["operationId"] == "erase"
    assert "/admin/erase/preview" in document["paths"]
    assert {"EraseTarget", "EraseRequest", "EraseReport"} <= set(document["components"]["schemas"])
