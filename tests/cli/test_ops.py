"""status, deliveries, show and replay against a real SQLite store."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def test_status_table_and_json(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "status", "--config", str(config))
    assert code == 0
    assert "leads: 2   quarantined: 0   undelivered: 0   unrouted: 0" in out
    lines = {
        line.split()[0]: line.split()
        for line in out.splitlines()
        if line.startswith(("crm", "chat"))
    }
    assert lines["crm"][1:6] == ["0", "0", "1", "1", "0"]
    assert lines["chat"][1:6] == ["2", "0", "0", "0", "0"]
    assert lines["chat"][6] == "2m"
    assert "1 dead deliveries" in out
    code, out, _ = run(capsys, "status", "--config", str(config), "--json")
    data = json.loads(out)
    crm = next(d for d in data["destinations"] if d["destination"] == "crm")
    assert crm["counts"] == {"pending": 0, "delivered": 1, "dead": 1, "skipped": 0}
    chat = next(d for d in data["destinations"] if d["destination"] == "chat")
    assert chat["oldest_pending_age_seconds"] == pytest.approx(120, abs=5)


def test_deliveries_filters(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "deliveries", "--config", str(config), "--status", "dead")
    assert code == 0
    assert "led_dead" in out and "REQUIRED_FIELD_MISSING" in out and "led_ok" not in out
    code, out, _ = run(
        capsys, "deliveries", "--config", str(config), "--destination", "chat", "--json"
    )
    rows = json.loads(out)
    assert {(r["lead_id"], r["status"]) for r in rows} == {
        ("led_ok", "pending"),
        ("led_dead", "pending"),
    }
    code, out, _ = run(capsys, "deliveries", "--config", str(config), "--since", "10s")
    assert "no deliveries match" in out


def test_show_lead_mapped_records_and_attempts(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "show", "led_dead", "--config", str(config))
    assert code == 0
    assert "destination crm: dead, 1 attempt(s)" in out
    assert "last error: HTTP 400: REQUIRED_FIELD_MISSING: LastName" in out
    assert '"Email": "sergunich@gmail.com"' in out
    assert "dead" in out and "50ms" in out
    code, out, _ = run(capsys, "show", "led_dead", "--config", str(config), "--json")
    data = json.loads(out)
    assert data["mapped"]["crm"]["record"] == {"Email": "sergunich@gmail.com", "Company": "Org"}
    assert [a["outcome"] for a in data["attempts"]] == ["dead"]
    code, _, err = run(capsys, "show", "nope", "--config", str(config))
    assert code == 1 and "not stored" in err


def test_replay(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "replay", "led_ok", "--config", str(config), "--destination", "crm")
    assert code == 1 and "already delivered" in out and "--force" in out
    code, out, _ = run(
        capsys, "replay", "led_ok", "--config", str(config), "--destination", "crm", "--force"
    )
    assert code == 0 and "requeued 1 delivery" in out
    code, out, _ = run(capsys, "replay", "--dead", "--config", str(config), "--json")
    assert code == 0 and json.loads(out)["requeued"] == 1
    code, out, _ = run(capsys, "deliveries", "--config", str(config), "--status", "dead")
    assert "no deliveries match" in out
    code, _, err = run(capsys, "replay", "--config", str(config))
    assert code == 2 and "LEAD_ID or --dead" in err
    code, _, err = run(capsys, "replay", "--dead", "--destination", "nope", "--config", str(config))
    assert code == 2 and "no destination named 'nope'" in err


def test_commands_need_a_config(capsys: pytest.CaptureFixture[str], monkeypatch: Any) -> None:
    monkeypatch.delenv("LEAD_BRIDGE_CONFIG", raising=False)
    code, _, err = run(capsys, "status")
    assert code == 2 and "pass --config PATH or set LEAD_BRIDGE_CONFIG" in err


def test_replay_of_a_lead_stored_before_its_destination_existed(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(destinations=[])

    async def fill() -> None:
        store = SQLiteStore(f"sqlite:///{path.parent / 'lead-bridge.db'}")
        await store.open()
        await store.ingest([LeadIn("early", json.dumps(make_lead("early")))], [], [], time.time())
        await store.close()

    asyncio.run(fill())
    path = write_config(destinations=DESTS)
    code, out, _ = run(capsys, "replay", "early", "--config", str(path))
    assert code == 0 and "requeued 2 deliveries" in out
    code, out, _ = run(capsys, "deliveries", "--config", str(path), "--json")
    assert sorted((r["lead_id"], r["destination"], r["status"]) for r in json.loads(out)) == [
        ("early", "chat", "pending"),
        ("early", "crm", "pending"),
    ]
