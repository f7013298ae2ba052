"""status, deliveries, show and replay against a real SQLite store."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.store.base import LeadIn
from bridge.store.sqlite import SQLiteStore
from tests.cli.conftest import DESTS, run
from tests.conftest import make_lead


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


def test_replay(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "replay", "led_ok", "--config", str(config), "--destination", "crm")
    assert code == 1 and "already delivered" in out and "--force" in out
    code, out, _ = run(
        capsys, "replay", "led_ok", "--config", str(config), "--destination", "crm", "--force"
    )
    assert code == 0 and "requeued 1 delivery" in out
    code, out, _ = run(capsys, "replay", "--dead", "--yes", "--config", str(config), "--json")
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


class _Terminal:
    """stdin of an operator at a terminal who types ``answer``."""

    def __init__(self, answer: str) -> None:
        self.answer = answer

    def isatty(self) -> bool:
        return True

    def readline(self) -> str:
        return self.answer


def dead_count(config: Path, capsys: pytest.CaptureFixture[str]) -> int:
    _, out, _ = run(capsys, "deliveries", "--config", str(config), "--status", "dead", "--json")
    return len(json.loads(out))


def test_replay_dead_previews_counts_and_asks(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run(capsys, "replay", "--dead", "--dry-run", "--config", str(config))
    assert (code, out.strip()) == (
        0,
        "would requeue 1 dead delivery (crm 1); nothing changed (--dry-run)",
    )
    code, out, _ = run(capsys, "replay", "--dead", "--dry-run", "--json", "--config", str(config))
    assert json.loads(out) == {
        "requeued": 0,
        "would_requeue": 1,
        "by_destination": {"crm": 1},
        "dry_run": True,
    }
    # Not a terminal and no --yes: nothing happens, and it says how to confirm.
    code, _, err = run(capsys, "replay", "--dead", "--config", str(config))
    assert code == 1 and "would requeue 1 dead delivery (crm 1): confirm with --yes" in err
    monkeypatch.setattr("sys.stdin", _Terminal("n\n"))
    code, out, err = run(capsys, "replay", "--dead", "--config", str(config))
    assert "requeue 1 dead delivery (crm 1)? [y/N]" in err and "cancelled: 0 requeued" in out
    assert dead_count(config, capsys) == 1
    monkeypatch.setattr("sys.stdin", _Terminal("y\n"))
    code, out, _ = run(capsys, "replay", "--dead", "--config", str(config))
    assert code == 0 and out.startswith("requeued 1 delivery (crm 1)")
    assert dead_count(config, capsys) == 0


def test_replay_dead_with_nothing_dead_is_0_requeued(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "replay", "--dead", "--yes", "--config", str(config))[0] == 0
    code, out, _ = run(capsys, "replay", "--dead", "--yes", "--config", str(config))
    assert (code, out.strip()) == (0, "nothing dead: 0 requeued")
    code, out, _ = run(capsys, "replay", "--dead", "--yes", "--json", "--config", str(config))
    result = json.loads(out)
    assert result["requeued"] == 0 and "not_found" not in result


def test_yes_and_dry_run_belong_to_dead(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "replay", "led_ok", "--yes", "--config", str(config))
    assert code == 2 and "--yes and --dry-run go with --dead" in err


def test_progress_bar_only_on_a_terminal_without_json(monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.cli.progress import progress_bar, wanted

    monkeypatch.setattr("sys.stderr.isatty", lambda: False)
    assert not wanted()
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    assert wanted() and not wanted(json_output=True)
    with progress_bar("requeueing", 3, enabled=True) as advance:
        for _ in range(3):
            advance(1)


def test_json_times_are_iso_8601_utc_like_the_admin_api(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bridge.admin.http import delivery_json

    code, out, _ = run(capsys, "deliveries", "--config", str(config), "--json")
    assert code == 0
    rows = {(r["lead_id"], r["destination"]): r for r in json.loads(out)}

    async def records() -> list[Any]:
        store = SQLiteStore(f"sqlite:///{config.parent / 'lead-bridge.db'}")
        await store.open()
        try:
            return await store.get_deliveries("led_dead")
        finally:
            await store.close()

    for record in asyncio.run(records()):
        admin = delivery_json(record)
        cli = rows[(record.lead_id, record.destination)]
        for key in ("created_at", "updated_at", "delivered_at", "next_attempt_at"):
            assert cli[key] == admin[key], key
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", cli["updated_at"])
    _, out, _ = run(capsys, "status", "--config", str(config), "--json")
    chat = next(d for d in json.loads(out)["destinations"] if d["destination"] == "chat")
    assert chat["oldest_pending_at"].endswith("Z")


@pytest.fixture
def many(write_config: Callable[..., Path]) -> Path:
    """120 leads, each with a pending delivery to crm and chat."""
    path = write_config(destinations=DESTS)

    async def fill() -> None:
        store = SQLiteStore(f"sqlite:///{path.parent / 'lead-bridge.db'}")
        await store.open()
        leads = [LeadIn(f"led_{i:03d}", json.dumps(make_lead(f"led_{i:03d}"))) for i in range(120)]
        await store.ingest(leads, ["crm", "chat"], [], time.time())
        await store.close()

    asyncio.run(fill())
    return path


def test_deliveries_says_when_it_shows_only_a_page(
    many: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "deliveries", "--config", str(many))
    assert code == 0
    assert len([line for line in out.splitlines() if line.startswith("led_")]) == 50
    assert out.rstrip().endswith(
        "showing 1-50 of 240 (newest first); use --limit N for more per page, --page 2 for the next"
    )
    _, out, _ = run(capsys, "deliveries", "--config", str(many), "-d", "crm", "--page", "3")
    assert out.rstrip().endswith(
        "showing 101-120 of 120 (newest first); use --limit N for more per page"
    )
    _, out, _ = run(capsys, "deliveries", "--config", str(many), "--limit", "500")
    assert "showing" not in out
    _, out, _ = run(capsys, "deliveries", "--config", str(many), "--page", "9")
    assert out.strip() == "page 9 is empty: 240 match"


def test_a_closed_pipe_ends_the_output_quietly(many: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "deliveries", "--json", "--limit", "240", "-c", str(many)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.read(100)  # like `| head -c 100`: read a little, then go away
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(120) == 141  # 128 + SIGPIPE, as other Unix tools
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
