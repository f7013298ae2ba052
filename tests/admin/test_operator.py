"""The admin API's operator endpoints, end to end through the app on SQLite."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.store.base import LeadIn
from tests.conftest import AppHarness, make_lead
from tests.connectors.fake_http import FakeHTTP
from tests.operations.helpers import T0, finish_all

TOKENS = ["first-admin-token-0123456", "second-admin-token-012345"]
AUTH = {"authorization": f"Bearer {TOKENS[1]}"}


@pytest.fixture
async def admin(make_app: Callable[..., Any], tmp_path: Path) -> AppHarness:
    out = {"path": str(tmp_path / "out.jsonl")}
    harness: AppHarness = await make_app(
        admin={"tokens": TOKENS},
        destinations=[
            {"name": "crm", "type": "jsonl", "settings": out, "mapping": {"Email": "data.email"}},
            {"name": "chat", "type": "jsonl", "settings": out},
        ],
    )
    return harness


async def seed(h: AppHarness) -> None:
    leads = [
        LeadIn(lid, json.dumps(make_lead(lid, email=f"{lid}@example.com", phone="+1 555 0100")))
        for lid in ("led_1", "led_2", "led_3")
    ]
    await h.store.ingest(leads, ["crm", "chat"], [], now=T0)
    await finish_all(
        h.store,
        "crm",
        status="dead",
        only=["led_1", "led_2"],
        error="HTTP 422: no",
        status_code=422,
        now=T0 + 5,
    )
    await finish_all(h.store, "chat", now=T0 + 6)


async def test_search_by_email_and_phone(admin: AppHarness) -> None:
    await seed(admin)
    r = await admin.client.get("/admin/leads", params={"email": "LED_2@example.com"}, headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["id"] for x in body["leads"]] == ["led_2"] and body["total"] == 1
    assert body["leads"][0]["deliveries"] == {"crm": "dead", "chat": "delivered"}
    r = await admin.client.get(
        "/admin/leads", params={"phone": "15550100", "status": "dead", "limit": "1"}, headers=AUTH
    )
    page = r.json()
    assert len(page["leads"]) == 1 and page["total"] == 2 and page["next_cursor"]
    r = await admin.client.get(
        "/admin/leads",
        params={"cursor": page["next_cursor"], "phone": "15550100", "status": "dead"},
        headers=AUTH,
    )
    assert [x["id"] for x in r.json()["leads"]] == ["led_1"]


@pytest.mark.parametrize(
    ("params", "says"),
    [
        ({"status": "lost"}, "status: expected one of"),
        ({"nope": "1"}, "unknown query parameter; use"),
        ({"from": "yesterday"}, "from: expected a duration"),
        ({"limit": "0"}, "limit: expected 1 to 500"),
    ],
)
async def test_search_bad_parameters_are_400(
    admin: AppHarness, params: dict[str, str], says: str
) -> None:
    r = await admin.client.get("/admin/leads", params=params, headers=AUTH)
    assert r.status_code == 400 and says in r.json()["message"]


async def test_dead_letters_preview_replay_and_audit(admin: AppHarness) -> None:
    await seed(admin)
    r = await admin.client.get(
        "/admin/dead-letters", params={"error_class": "http_4xx"}, headers=AUTH
    )
    assert r.json()["total"] == 2
    assert {d["error_class"] for d in r.json()["dead_letters"]} == {"http_4xx"}
    r = await admin.client.post(
        "/admin/dead-letters/preview", json={"destination": "crm"}, headers=AUTH
    )
    preview = r.json()
    assert preview["count"] == 2 and preview["by_destination"] == {"crm": 2}
    r = await admin.client.post(
        "/admin/dead-letters/replay",
        json={"destination": "crm", "as_of": preview["as_of"]},
        headers=AUTH,
    )
    assert r.json() == {"requeued": 2}
    r = await admin.client.post("/admin/dead-letters/replay", json={"ids": []}, headers=AUTH)
    assert r.status_code == 400 and r.json()["message"].startswith("ids:")
    r = await admin.client.get("/admin/audit", headers=AUTH)
    (entry,) = r.json()["entries"]
    assert entry["actor"] == "api:admin.tokens[1]" and entry["action"] == "bulk_replay"
    assert TOKENS[1] not in r.text


async def test_single_replay_is_audited(admin: AppHarness) -> None:
    await seed(admin)
    r = await admin.client.post("/admin/replay", json={"lead_id": "led_1"}, headers=AUTH)
    assert r.status_code == 200
    (entry,) = (await admin.client.get("/admin/audit", headers=AUTH)).json()["entries"]
    assert (entry["action"], entry["target"], entry["detail"]["requeued"]) == ("replay", "led_1", 1)


async def test_overview_drift_unrouted_map(admin: AppHarness) -> None:
    await seed(admin)
    r = await admin.client.get("/admin/overview", headers=AUTH)
    assert r.status_code == 200, r.text
    crm = next(d for d in r.json()["destinations"] if d["name"] == "crm")
    assert (crm["dead"], crm["pending"], crm["worker_running"]) == (2, 1, None)
    assert len(crm["per_hour"]) == 24
    assert (await admin.client.get("/admin/drift", headers=AUTH)).json() == {"keys": []}
    assert (await admin.client.get("/admin/unrouted", headers=AUTH)).json() == {"leads": []}
    r = await admin.client.post(
        "/admin/map", json={"lead": make_lead("led_m", email="m@example.com")}, headers=AUTH
    )
    (report,) = r.json()["leads"]
    crm_map = next(d for d in report["destinations"] if d["name"] == "crm")
    assert crm_map["record"] == {"Email": "m@example.com"}
    r = await admin.client.post("/admin/map", json={}, headers=AUTH)
    assert r.status_code == 400


async def test_check_and_test_send(make_app: Callable[..., Any], tmp_path: Path) -> None:
    with FakeHTTP() as receiver:
        h: AppHarness = await make_app(
            admin={"tokens": TOKENS},
            destinations=[
                {
                    "name": "hook",
                    "type": "webhook",
                    "settings": {"url": receiver.url + "/in", "allow_private": True},
                }
            ],
        )
        r = await h.client.post("/admin/destinations/hook/check", headers=AUTH)
        assert r.json()["ok"] is True and receiver.requests[-1].method == "HEAD"
        r = await h.client.post("/admin/destinations/hook/test", headers=AUTH)
        sent = r.json()
        assert sent["ok"] is True and sent["lead_id"].startswith("lb-test-")
        assert receiver.requests[-1].json()["test"] is True
        r = await h.client.post("/admin/destinations/nope/check", headers=AUTH)
        assert r.status_code == 404 and "known: hook" in r.json()["message"]
    entries = (await h.client.get("/admin/audit", headers=AUTH)).json()["entries"]
    assert [e["action"] for e in entries] == ["test_send"]


async def test_openapi_describes_the_operator_endpoints(admin: AppHarness) -> None:
    doc = (await admin.client.get("/admin/openapi.json")).json()
    for path in (
        "/admin/leads",
        "/admin/dead-letters/preview",
        "/admin/overview",
        "/admin/destinations/{name}/test",
        "/admin/audit",
        "/admin/map",
    ):
        assert path in doc["paths"], path
    assert "LeadPage" in doc["components"]["schemas"]
    names = set(re.findall(r"#/components/schemas/(\w+)", json.dumps(doc)))
    assert len(names) > 10
    assert names <= set(doc["components"]["schemas"])  # every reference resolves


async def test_endpoints_need_the_token(admin: AppHarness) -> None:
    for method, path in (
        ("GET", "/admin/leads"),
        ("POST", "/admin/dead-letters/replay"),
        ("POST", "/admin/destinations/crm/test"),
        ("GET", "/admin/audit"),
    ):
        r = await admin.client.request(method, path)
        assert r.status_code == 401, path


async def test_empty_lead_id_is_not_redirected_to_the_search(admin: AppHarness) -> None:
    assert (await admin.client.get("/admin/leads/")).status_code == 401
    r = await admin.client.get("/admin/leads/", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"] == "not_found"
