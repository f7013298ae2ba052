"""A lead's timeline, masking, and "send a test lead"."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from bridge.destinations import Runtime
from bridge.operations.audit import list_audit
from bridge.operations.search import LeadQuery, search_leads
from bridge.operations.testsend import send_test_lead
from bridge.operations.timeline import lead_timeline
from bridge.store.base import Store
from tests.connectors.fake_http import Answer, FakeHTTP
from tests.operations.helpers import T0, add_leads, finish_all, lead


async def test_timeline_has_mapped_records_and_attempts(
    store: Store, make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    runtime = make_runtime(
        destinations=[
            {
                "name": "crm",
                "type": "jsonl",
                "settings": {"path": str(tmp_path / "o.jsonl")},
                "mapping": {
                    "Email": "data.email",
                    "Budget": {"source": "data.budget", "required": True},
                },
            }
        ]
    )
    await add_leads(store, [lead("led_t", email="t@example.com")], ["crm"])
    await finish_all(store, "crm", status="pending", error="HTTP 503", status_code=503, now=T0 + 1)
    timeline = await lead_timeline(store, runtime, "led_t")
    assert timeline is not None and not timeline.test
    assert timeline.payload["data"]["email"] == "t@example.com"
    (attempt,) = timeline.attempts
    assert (attempt.outcome, attempt.status_code, attempt.error) == ("retry", 503, "HTTP 503")
    (crm,) = timeline.mapped
    assert crm["matched"] and crm["error"]["field"] == "Budget"
    assert await lead_timeline(store, runtime, "led_none") is None


async def test_send_test_lead_is_marked_sent_once_and_not_stored(
    store: Store, make_runtime: Callable[..., Runtime]
) -> None:
    with FakeHTTP() as receiver:
        receiver.queue(
            Answer(200, b'{"id": "r-1"}', {"Content-Type": "application/json"}),
            Answer(500, b"boom"),
        )
        runtime = make_runtime(
            destinations=[
                {
                    "name": "hook",
                    "type": "webhook",
                    "settings": {"url": receiver.url + "/in", "allow_private": True},
                }
            ]
        )
        dest = runtime.destinations[0]
        ok = await send_test_lead(store, dest, actor="admin-token#1")
        failed = await send_test_lead(store, dest, actor="cli:ops")
    assert ok.ok and ok.remote_id == "r-1" and ok.status_code == 200
    assert ok.lead_id.startswith("lb-test-")
    sent = receiver.requests[0].json()
    assert sent["test"] is True and sent["id"] == ok.lead_id
    assert "Lead Bridge test" in json.dumps(sent)
    assert not failed.ok and failed.status_code == 500 and "HTTP 500" in (failed.error or "")
    assert len(receiver.requests) == 2  # one request each, no retry
    assert (await search_leads(store, LeadQuery())).total == 0  # never stored
    entries = await list_audit(store)
    assert [(e.actor, e.action, e.target, e.detail["ok"]) for e in entries] == [
        ("cli:ops", "test_send", "hook", False),
        ("admin-token#1", "test_send", "hook", True),
    ]
