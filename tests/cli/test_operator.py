"""search, dead-letters, overview, drift, check-credentials, test-send, audit and
the audit of replay and erase, against a real SQLite store."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.cli import main
from bridge.operations.audit import list_audit
from bridge.store.base import LeadIn
from bridge.store.sqlite import SQLiteStore
from tests.conftest import make_lead
from tests.connectors.fake_http import FakeHTTP
from tests.operations.helpers import finish_all


@pytest.fixture
def config(write_config: Callable[..., Path], tmp_path: Path) -> Path:
    path = write_config(
        destinations=[
            {
                "name": "crm",
                "type": "jsonl",
                "settings": {"path": str(tmp_path / "crm.jsonl")},
                "mapping": {"Email": "data.email"},
            },
        ]
    )

    async def fill() -> None:
        store = SQLiteStore(f"sqlite:///{path.parent / 'lead-bridge.db'}")
        await store.open()
        now = time.time()
        leads = [
            LeadIn(i, json.dumps(make_lead(i, email=f"{i}@example.com", phone="+49 30 1234")))
            for i in ("led_a", "led_b", "led_c")
        ]
        await store.ingest(leads, ["crm"], [], now - 120)
        await finish_all(
            store,
            "crm",
            status="dead",
            only=["led_a", "led_b"],
            now=now - 60,
            error="HTTP 401: expired",
            status_code=401,
        )
        await store.close()

    asyncio.run(fill())
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def audit_entries(config: Path) -> list[Any]:
    async def read() -> list[Any]:
        store = SQLiteStore(f"sqlite:///{config.parent / 'lead-bridge.db'}")
        await store.open()
        try:
            return await list_audit(store)
        finally:
            await store.close()

    return asyncio.run(read())


def test_search_by_email_phone_and_status(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "search", "-c", str(config), "--email", "LED_B@example.com")
    assert code == 0 and "led_b" in out and "led_a" not in out and "crm=dead" in out
    code, out = run(capsys, "search", "-c", str(config), "--phone", "49301234", "--json")
    assert [x["id"] for x in json.loads(out)["leads"]] == ["led_c", "led_b", "led_a"]
    code, out = run(capsys, "search", "-c", str(config), "--status", "dead", "--limit", "1")
    assert "next page: --cursor" in out and "1 shown of 2 matching" in out


def test_search_bad_time_is_a_usage_error(config: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["search", "-c", str(config), "--from", "yesterday"])
    assert exc.value.code == 2


def test_dead_letters_list_preview_and_replay(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, "dead-letters", "-c", str(config), "--error-class", "auth")
    assert code == 0 and "led_a" in out and "2 shown of 2 matching" in out
    code, out = run(capsys, "dead-letters", "-c", str(config), "--replay", "--json")
    assert code == 1  # not interactive and no --yes: refused, nothing requeued
    code, out = run(capsys, "dead-letters", "-c", str(config), "--replay", "--yes")
    assert code == 0 and "requeued 2 of 2 previewed" in out
    code, out = run(capsys, "dead-letters", "-c", str(config), "--replay", "--yes")
    assert "nothing to replay" in out
    (entry,) = audit_entries(config)
    assert entry.action == "bulk_replay" and entry.actor.startswith("cli:")


def test_replay_and_erase_are_audited(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["replay", "-c", str(config), "led_a"]) == 0
    assert main(["erase", "-c", str(config), "--lead", "led_c", "--yes"]) == 0
    entries = audit_entries(config)
    assert [(e.action, e.target) for e in entries] == [("erase", "led_c"), ("replay", "led_a")]
    assert entries[0].detail["leads"] == 1 and "led_c@" not in json.dumps(entries[0].detail)


def test_overview_and_drift(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "overview", "-c", str(config))
    assert code == 0 and "crm" in out and "HTTP 401" in out
    code, out = run(capsys, "overview", "-c", str(config), "--json")
    (crm,) = json.loads(out)["destinations"]
    assert (crm["dead"], crm["pending"]) == (2, 1)
    code, out = run(capsys, "drift", "-c", str(config))
    assert "no schema drift" in out


def test_check_credentials_and_test_send(
    write_config: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeHTTP() as receiver:
        config = write_config(
            destinations=[
                {
                    "name": "hook",
                    "type": "webhook",
                    "settings": {"url": receiver.url + "/in", "allow_private": True},
                },
                {"name": "guarded", "type": "webhook", "settings": {"url": receiver.url + "/x"}},
            ]
        )
        code, out = run(capsys, "check-credentials", "-c", str(config))
        assert code == 1 and "ok" in out and "FAILED" in out and "non-public" in out
        code, out = run(capsys, "check-credentials", "-c", str(config), "hook", "--json")
        assert code == 0 and json.loads(out)["hook"]["ok"] is True
        code, out = run(capsys, "test-send", "-c", str(config), "hook")
        assert code == 0 and "sent test lead lb-test-" in out
        code, out = run(capsys, "test-send", "-c", str(config), "nope")
        assert code == 2
    assert receiver.requests[-1].json()["test"] is True
    code, out = run(capsys, "audit", "-c", str(config))
    assert "test_send" in out and "hook" in out
