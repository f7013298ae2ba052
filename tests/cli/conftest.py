"""What the CLI tests share: a configuration whose SQLite store holds two
leads (one delivered, one dead letter), and running a command."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.cli import main
from bridge.store.base import LeadIn, Outcome
from bridge.store.sqlite import SQLiteStore
from tests.conftest import make_lead

DESTS = [
    {
        "name": "crm",
        "type": "jsonl",
        "settings": {"path": "crm.jsonl"},
        "mapping": {"Email": "data.email", "Company": "data.organization_name"},
    },
    {"name": "chat", "type": "jsonl", "settings": {"path": "chat.jsonl"}},
]


@pytest.fixture
def config(write_config: Callable[..., Path]) -> Path:
    path = write_config(destinations=DESTS)

    async def fill() -> None:
        store = SQLiteStore(f"sqlite:///{path.parent / 'lead-bridge.db'}")
        await store.open()
        now = time.time()
        leads = [LeadIn(i, json.dumps(make_lead(i))) for i in ("led_ok", "led_dead")]
        await store.ingest(leads, ["crm", "chat"], [], now - 120)
        claims = await store.claim(destination="crm", limit=10, lease_seconds=60, now=now)
        outcomes = []
        for c in claims:
            if c.lead_id == "led_ok":
                outcomes.append(
                    Outcome(
                        c.delivery_id,
                        c.lease_token,
                        "delivered",
                        "delivered",
                        now - 60,
                        0.12,
                        remote_id="00Q5e00000abc",
                        status_code=201,
                    )
                )
            else:
                outcomes.append(
                    Outcome(
                        c.delivery_id,
                        c.lease_token,
                        "dead",
                        "dead",
                        now - 30,
                        0.05,
                        error="HTTP 400: REQUIRED_FIELD_MISSING: LastName",
                        status_code=400,
                    )
                )
        await store.finish(outcomes)
        await store.close()

    asyncio.run(fill())
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err
