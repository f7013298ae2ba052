"""A console on a real SQLite store, driven in-process, logged in or not."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.store.base import LeadIn
from tests.conftest import AppHarness, finish_pending, make_lead

ADMIN = "admin-token-for-console-0123"
VIEWER = "viewer-token-for-console-0123"
T0 = 1_700_000_000.0
UI = "/admin/ui"


@pytest.fixture
async def console(make_app: Callable[..., Any], tmp_path: Path) -> AppHarness:
    jsonl = {"path": str(tmp_path / "out.jsonl")}
    harness: AppHarness = await make_app(
        admin={"tokens": [ADMIN], "viewer_token": VIEWER},
        destinations=[
            {
                "name": "crm",
                "type": "jsonl",
                "settings": jsonl,
                "mapping": {"Email": {"source": "data.email", "required": True}},
            },
            {"name": "archive", "type": "jsonl", "settings": jsonl},
        ],
    )
    return harness


async def login(client: httpx.AsyncClient, token: str = ADMIN) -> str:
    """Log in; returns the CSRF token of the new session."""
    response = await client.post(f"{UI}/login", data={"token": token})
    assert response.status_code == 303, response.text
    page = await client.get(f"{UI}/")
    return csrf_of(page.text)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


async def seed(h: AppHarness) -> None:
    """led_ok delivered everywhere; led_dead dead at crm (HTTP 500), delivered at archive."""
    leads = [
        LeadIn(lid, json.dumps(make_lead(lid, email=f"{lid}@example.com")))
        for lid in ("led_ok", "led_dead")
    ]
    await h.store.ingest(leads, ["crm", "archive"], [], now=T0)
    await finish_pending(
        h.store, ["crm", "archive"], T0, {("led_dead", "crm"): ("HTTP 500: server error", 500)}
    )


async def status_of(h: AppHarness, lead_id: str, destination: str) -> str:
    return next(
        d.status for d in await h.store.get_deliveries(lead_id) if d.destination == destination
    )


async def seed_delivered_now(h: AppHarness) -> None:
    """One lead delivered just now to every destination that takes it; one
    (led_unrouted) that none takes (its `when` skips it)."""
    import time

    from bridge.store.base import Outcome as Out

    now = time.time()
    names = [d.name for d in h.runtime.active]
    leads = [
        LeadIn("led_now", json.dumps(make_lead("led_now", organization_country="Canada"))),
        LeadIn("led_unrouted", json.dumps(make_lead("led_unrouted"))),
    ]
    await h.store.ingest(leads, names, [], now=now)
    for name in names:
        claims = await h.store.claim(destination=name, limit=10, lease_seconds=60, now=now)
        await h.store.finish(
            [
                Out(c.delivery_id, c.lease_token, "delivered", "delivered", now, 0.01)
                if c.lead_id == "led_now"
                else Out(c.delivery_id, c.lease_token, "skipped", "skipped", now, 0.0)
                for c in claims
            ]
        )
