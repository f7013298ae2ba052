"""The admin API: token-protected status, lead lookup, deliveries, replay, metrics, OpenAPI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.admin import metrics_routes
from bridge.store.base import LeadIn
from tests.conftest import AppHarness, finish_pending, make_lead

TOKEN = "admin-token-for-tests-0123"
AUTH = {"authorization": f"Bearer {TOKEN}"}
T0 = 1_700_000_000.0


@pytest.fixture
async def admin(make_app: Callable[..., Any], tmp_path: Path) -> AppHarness:
    jsonl = {"path": str(tmp_path / "out.jsonl")}
    harness: AppHarness = await make_app(
        admin={"tokens": [TOKEN]},
        destinations=[
            {"name": "archive", "type": "jsonl", "settings": jsonl},
            {"name": "audit", "type": "jsonl", "settings": jsonl},
        ],
    )
    return harness


async def seed(h: AppHarness) -> None:
    """led_ok delivered to both; led_dead dead at archive, delivered at audit."""
    leads = [
        LeadIn(lid, json.dumps(make_lead(lid, email=f"{lid}@example.com")))
        for lid in ("led_ok", "led_dead")
    ]
    await h.store.ingest(leads, ["archive", "audit"], [], now=T0)
    await finish_pending(
        h.store, ["archive", "audit"], T0, {("led_dead", "archive"): ("HTTP 400: rejected", 400)}
    )


async def test_no_tokens_means_no_admin_api(make_app: Callable[..., Any]) -> None:
    h: AppHarness = await make_app()
    for path in ("/admin/status", "/admin/openapi.json", "/admin/metrics"):
        response = await h.client.get(path, headers=AUTH)
        assert response.status_code == 404, path


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}, {"authorization": "Basic x"}],
)
async def test_wrong_or_missing_token_is_401(admin: AppHarness, headers: dict[str, str]) -> None:
    response = await admin.client.get("/admin/status", headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"] == "unauthorized"
    assert TOKEN not in response.text


async def test_webhook_secret_is_not_an_admin_token(make_app: Callable[..., Any]) -> None:
    h: AppHarness = await make_app(
        admin={"tokens": [TOKEN]}, auth={"header_secrets": ["hook-secret"]}
    )
    response = await h.client.get("/admin/status", headers={"authorization": "Bearer hook-secret"})
    assert response.status_code == 401


async def test_status(admin: AppHarness) -> None:
    await seed(admin)

    response = await admin.client.get("/admin/status", headers=AUTH)

    assert response.status_code == 200
    body = response.json()
    assert (body["leads"], body["quarantined"], body["workers"]) == (2, 0, False)
    archive = next(d for d in body["destinations"] if d["name"] == "archive")
    assert archive["counts"] == {"pending": 0, "delivered": 1, "dead": 1, "skipped": 0}
    assert archive["type"] == "jsonl" and archive["configured"] and archive["enabled"]


async def test_lead_lookup_includes_payload_deliveries_and_attempts(admin: AppHarness) -> None:
    await seed(admin)

    response = await admin.client.get("/admin/leads/led_dead", headers=AUTH)

    assert response.status_code == 200
    body = response.json()
    assert body["lead"]["payload"]["data"]["email"] == "led_dead@example.com"
    assert body["lead"]["purged"] is False
    assert {(d["destination"], d["status"]) for d in body["deliveries"]} == {
        ("archive", "dead"),
        ("audit", "delivered"),
    }
    dead = next(a for a in body["attempts"] if a["destination"] == "archive")
    assert dead == {
        "destination": "archive",
        "number": 1,
        "started_at": dead["started_at"],
        "duration_ms": 200.0,
        "outcome": "dead",
        "error": "HTTP 400: rejected",
        "status_code": 400,
        "remote_id": None,
    }
    # as `lead-bridge show`: the record each destination gets under the current config
    assert body["mapped"]["archive"]["when"] is True
    assert body["mapped"]["archive"]["record"]["id"] == "led_dead"


async def test_unknown_lead_is_404(admin: AppHarness) -> None:
    response = await admin.client.get("/admin/leads/led_nope", headers=AUTH)
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "message": "no lead with this id"}


async def test_deliveries_filters(admin: AppHarness) -> None:
    await seed(admin)

    dead = await admin.client.get("/admin/deliveries?status=dead", headers=AUTH)
    audit = await admin.client.get("/admin/deliveries?destination=audit&limit=1", headers=AUTH)
    recent = await admin.client.get("/admin/deliveries?since=1h", headers=AUTH)
    old = await admin.client.get("/admin/deliveries?since=2023-11-14T22:13:00Z", headers=AUTH)

    assert [(d["lead_id"], d["destination"]) for d in dead.json()["deliveries"]] == [
        ("led_dead", "archive")
    ]
    assert len(audit.json()["deliveries"]) == 1
    assert recent.json()["deliveries"] == []  # everything was updated at T0, long ago
    assert len(old.json()["deliveries"]) == 4


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=lost", "status: expected one of pending, delivered, dead, skipped"),
        ("since=yesterday", "since: expected a duration like 30m, 2h, 1d or an ISO 8601 time"),
        ("since=2024-01-01T00:00:00", "since: an ISO 8601 time needs a UTC offset"),
        ("limit=0", "limit: expected a whole number from 1 to 1000"),
        ("state=dead", "unknown query parameter; use status, destination, since, limit"),
    ],
)
async def test_deliveries_bad_query_names_the_parameter(
    admin: AppHarness, query: str, message: str
) -> None:
    response = await admin.client.get(f"/admin/deliveries?{query}", headers=AUTH)

    assert response.status_code == 400
    assert response.json()["message"].startswith(message)


async def test_replay_dead_letters(admin: AppHarness) -> None:
    await seed(admin)

    response = await admin.client.post("/admin/replay", json={"dead": True}, headers=AUTH)

    assert response.status_code == 200
    assert response.json() == {"requeued": 1, "refused_delivered": 0}
    (row,) = [d for d in await admin.store.get_deliveries("led_dead") if d.destination == "archive"]
    assert row.status == "pending" and row.attempts == 1


async def test_replay_delivered_needs_force(admin: AppHarness) -> None:
    await seed(admin)
    body = {"lead_id": "led_ok", "destination": "audit"}

    refused = await admin.client.post("/admin/replay", json=body, headers=AUTH)
    forced = await admin.client.post("/admin/replay", json={**body, "force": True}, headers=AUTH)

    assert refused.json() == {"requeued": 0, "refused_delivered": 1}
    assert forced.json() == {"requeued": 1, "refused_delivered": 0}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{}", "give lead_id or dead: true"),
        (b'{"destination": "audit"}', "give lead_id or dead: true"),
        (b"not json", "body: Invalid JSON"),
        (b'{"dead": true, "everything": 1}', "body: unknown field; accepted: lead_id, destination"),
        (b'{"dead": "maybe"}', "dead: expected a valid boolean"),
        (
            b'{"dead": true, "destination": "crm"}',
            "destination: unknown or disabled; known: archive, audit",
        ),
    ],
)
async def test_replay_bad_body_names_the_field(
    admin: AppHarness, body: bytes, message: str
) -> None:
    response = await admin.client.post("/admin/replay", content=body, headers=AUTH)

    assert response.status_code == 400
    assert response.json()["message"].startswith(message)


async def test_replay_with_nothing_dead_is_0_requeued(admin: AppHarness) -> None:
    response = await admin.client.post("/admin/replay", json={"dead": True}, headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {"requeued": 0, "refused_delivered": 0}


async def test_replay_nothing_matched_is_404(admin: AppHarness) -> None:
    response = await admin.client.post(
        "/admin/replay", json={"lead_id": "led_nope", "dead": True}, headers=AUTH
    )
    assert response.status_code == 404


async def test_metrics_behind_the_token_refresh_queue_gauges(admin: AppHarness) -> None:
    await seed(admin)

    unauth = await admin.client.get("/admin/metrics")
    response = await admin.client.get("/admin/metrics", headers=AUTH)

    assert unauth.status_code == 401
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'lead_bridge_queue_depth{destination="archive",status="dead"} 1.0' in text
    assert 'lead_bridge_dead_letters{destination="archive"} 1.0' in text
    assert "led_ok" not in text and "example.com" not in text


async def test_metrics_routes_for_the_main_port(make_app: Callable[..., Any]) -> None:
    h: AppHarness = await make_app(admin={"tokens": [TOKEN]})
    state = h.client._transport.app.state.lb  # type: ignore[attr-defined]
    (route,) = metrics_routes(state)
    assert route.path == "/metrics"  # type: ignore[attr-defined]

    separate: AppHarness = await make_app(admin={"tokens": [TOKEN]}, metrics={"port": 9464})
    assert metrics_routes(separate.client._transport.app.state.lb) == []  # type: ignore[attr-defined]


async def test_openapi_describes_every_operation(admin: AppHarness) -> None:
    response = await admin.client.get("/admin/openapi.json")

    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"] == "3.1.0"
    operations = {
        (path, method): op["operationId"]
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
    }
    assert operations == {
        ("/admin/status", "get"): "getStatus",
        ("/admin/leads/{lead_id}", "get"): "getLead",
        ("/admin/deliveries", "get"): "listDeliveries",
        ("/admin/replay", "post"): "replay",
        ("/admin/metrics", "get"): "getMetrics",
        ("/admin/erase/preview", "post"): "erasePreview",
        ("/admin/erase", "post"): "erase",
        ("/admin/leads", "get"): "searchLeads",
        ("/admin/dead-letters", "get"): "listDeadLetters",
        ("/admin/dead-letters/preview", "post"): "previewBulkReplay",
        ("/admin/dead-letters/replay", "post"): "bulkReplay",
        ("/admin/overview", "get"): "getOverview",
        ("/admin/drift", "get"): "getDrift",
        ("/admin/unrouted", "get"): "listUnrouted",
        ("/admin/map", "post"): "mapLead",
        ("/admin/destinations/{name}/check", "post"): "checkCredentials",
        ("/admin/destinations/{name}/test", "post"): "sendTestLead",
        ("/admin/audit", "get"): "listAudit",
    }
    schemas = doc["components"]["schemas"]
    refs = {
        ref.rsplit("/", 1)[1] for ref in _find_refs(doc) if ref.startswith("#/components/schemas/")
    }
    assert refs <= set(schemas), refs - set(schemas)
    assert set(schemas["ReplayRequest"]["properties"]) == {
        "lead_id",
        "destination",
        "dead",
        "force",
    }


def _find_refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if "$ref" in node else []
        return found + [r for v in node.values() for r in _find_refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _find_refs(v)]
    return []


async def test_store_failure_is_503(admin: AppHarness) -> None:
    await admin.store.close()
    response = await admin.client.get("/admin/status", headers=AUTH)
    assert response.status_code == 503
    assert response.json()["error"] == "store_unavailable"


@pytest.mark.parametrize("query", ["status=", "since="])
async def test_empty_filters_are_refused_as_the_description_says(
    admin: AppHarness, query: str
) -> None:
    # found by tests/fuzz/test_admin_api.py: the schema says an enum or a
    # duration/date-time, and "" was silently taken as "no filter"
    response = await admin.client.get(f"/admin/deliveries?{query}", headers=AUTH)
    assert response.status_code == 400


async def test_unicode_digits_are_not_a_limit(admin: AppHarness) -> None:
    # found by tests/fuzz/test_admin_api.py: "²".isdigit() is true, int("²") raised (500)
    response = await admin.client.get("/admin/deliveries?limit=%C2%B2", headers=AUTH)
    assert response.status_code == 400


async def test_audit_paging_beyond_any_id_is_a_400(admin: AppHarness) -> None:
    # found by tests/fuzz/test_admin_api.py: 2**63 overflowed SQLite's integer (500)
    response = await admin.client.get(f"/admin/audit?before_id={2**63}", headers=AUTH)
    assert response.status_code == 400
    assert "before_id: expected a whole number" in response.json()["message"]
