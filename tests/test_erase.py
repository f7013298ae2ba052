"""`lead-bridge erase` removes a person's data, and the bytes leave the SQLite files."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.cli import main
from bridge.store.base import LeadIn, Outcome, QuarantineIn
from bridge.store.sqlite import SQLiteStore

CANARY_EMAIL = "Canary.Person@erase-test.example"
CANARY_PHONE = "+15550009999123"
CANARY_NAME = "Zebedee-Canary"
T0 = 1_700_000_000.0


def payload(lead_id: str, email: str, phone: str, name: str, padding: int = 0) -> str:
    data = {"email": email, "phone": phone, "first_name": name, "notes": "x" * padding}
    return json.dumps({"id": lead_id, "data": data})


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "lb.db"


@pytest.fixture
def config(tmp_path: Path, db: Path) -> Path:
    # the destination secret is deliberately unset: erasure must not need it
    path = tmp_path / "config.yaml"
    path.write_text(
        f"storage:\n  url: sqlite:///{db}\n"
        "destinations:\n  - name: crm\n    type: webhook\n"
        "    settings: {url: '${UNSET_CRM_URL}'}\n"
    )
    return path


@pytest.fixture
async def server(db: Path) -> AsyncIterator[SQLiteStore]:
    """The running service's store, left open while the CLI erases (the real situation)."""
    store = SQLiteStore(f"sqlite:///{db}")
    await store.open()
    canary = payload("led_canary", CANARY_EMAIL, CANARY_PHONE, CANARY_NAME, padding=20_000)
    same_person = payload("led_canary_2", CANARY_EMAIL.upper(), "+10000000000", "Again")
    other = payload("led_other", "someone.else@example.com", "+19998887777", "Other")
    await store.ingest(
        [
            LeadIn("led_canary", canary),
            LeadIn("led_canary_2", same_person),
            LeadIn("led_other", other),
        ],
        ["crm"],
        [QuarantineIn("missing id", json.dumps({"data": {"email": CANARY_EMAIL}}), None, 1)],
        now=T0,
    )
    claims = await store.claim(destination="crm", limit=10, lease_seconds=60, now=T0)
    # The CRM echoed the address back in its error text, for this lead and another one.
    await store.finish(
        [
            Outcome(
                c.delivery_id,
                c.lease_token,
                "pending",
                "retry",
                T0,
                0.1,
                next_attempt_at=T0 + 5,
                error=f"HTTP 409: contact {CANARY_EMAIL} already exists",
                status_code=409,
            )
            for c in claims
        ]
    )
    yield store
    await store.close()


async def cli(*argv: str) -> int:
    # A separate thread with its own event loop, as a second process would be.
    return await asyncio.to_thread(main, list(argv))


def file_bytes(db: Path) -> dict[str, bytes]:
    files = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
    return {f.name: f.read_bytes() for f in files if f.exists()}


def canary_hits(db: Path) -> list[str]:
    hits = []
    for name, content in file_bytes(db).items():
        lowered = content.lower()
        for canary in (CANARY_EMAIL, CANARY_PHONE, CANARY_NAME):
            if canary.lower().encode() in lowered:
                hits.append(f"{canary} in {name}")
    return hits


async def test_erase_by_email_removes_everything_and_the_bytes(
    server: SQLiteStore, config: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert canary_hits(db), "the fixture should have written the canary to disk"

    code = await cli(
        "erase", "--email", CANARY_EMAIL.lower(), "--config", str(config), "--json", "--yes"
    )

    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {
        "leads": 2,
        "deliveries": 2,
        "attempts": 3,
        "quarantine": 1,
        "errors_scrubbed": 1,
        "lead_ids": ["led_canary", "led_canary_2"],
        "dry_run": False,
        "files_clean": True,
    }
    assert await server.get_lead("led_canary") is None
    assert await server.get_lead("led_canary_2") is None
    assert await server.list_quarantine() == []
    assert await server.get_attempts("led_other") == []
    assert canary_hits(db) == []
    # the unrelated lead is still there, minus the error text that quoted the address
    other = await server.get_lead("led_other")
    assert other is not None and "someone.else@example.com" in (other.payload or "")
    (delivery,) = await server.get_deliveries("led_other")
    assert (
        delivery.status == "pending"
        and CANARY_EMAIL.lower() not in (delivery.last_error or "").lower()
    )


async def test_erase_by_lead_id(
    server: SQLiteStore, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await cli("erase", "--lead", "led_other", "--config", str(config), "--yes")

    assert code == 0
    out = capsys.readouterr().out
    assert "erased 1 lead(s), 1 delivery record(s), 1 attempt record(s)" in out
    assert "lead ids: led_other" in out
    assert await server.get_lead("led_other") is None
    assert await server.get_lead("led_canary") is not None


async def test_erase_reports_nothing_found(
    server: SQLiteStore, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await cli("erase", "--email", "nobody@example.org", "--config", str(config))

    assert code == 0
    assert "nothing to erase" in capsys.readouterr().out
    status = await server.status(T0)
    assert status.leads == 3 and status.quarantined == 1


def test_erase_needs_an_email_or_a_lead(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["erase", "--config", str(config)]) == 2
    assert "give --email ADDRESS or --lead ID" in capsys.readouterr().err
    assert main(["erase", "--email", "not-an-address", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "--email expects an e-mail address" in err and "not-an-address" not in err


async def test_erase_logs_no_address(
    server: SQLiteStore, config: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    await cli("erase", "--email", CANARY_EMAIL, "--config", str(config), "--yes")

    assert "event=erase by=email leads=2" in caplog.text
    assert CANARY_EMAIL.lower() not in caplog.text.lower()


class Terminal(io.StringIO):
    """stdin or stderr as a terminal (isatty), with what the user types."""

    def isatty(self) -> bool:
        return True


async def test_dry_run_counts_and_changes_nothing(
    server: SQLiteStore, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await cli("erase", "--email", CANARY_EMAIL, "--config", str(config), "--dry-run")

    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("would erase 2 lead(s), 2 delivery record(s), 3 attempt record(s)")
    assert "lead ids: led_canary, led_canary_2" in out
    assert await server.get_lead("led_canary") is not None
    assert len(await server.list_quarantine()) == 1

    code = await cli(
        "erase", "--email", CANARY_EMAIL, "--config", str(config), "--dry-run", "--json"
    )
    report = json.loads(capsys.readouterr().out)
    assert report["dry_run"] is True and report["leads"] == 2
    assert await server.get_lead("led_canary") is not None


async def test_without_a_terminal_erase_needs_yes(
    server: SQLiteStore, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = await cli("erase", "--email", CANARY_EMAIL, "--config", str(config))

    assert code == 1
    assert "run again with --yes (or --dry-run)" in capsys.readouterr().err
    assert await server.get_lead("led_canary") is not None


@pytest.mark.parametrize(("answer", "erased"), [("y\n", True), ("\n", False), ("no\n", False)])
async def test_erase_asks_on_a_terminal(
    server: SQLiteStore,
    config: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    erased: bool,
) -> None:
    monkeypatch.setattr("sys.stdin", Terminal(answer))

    code = await cli("erase", "--email", CANARY_EMAIL, "--config", str(config))

    captured = capsys.readouterr()
    assert captured.out.startswith("would erase 2 lead(s)")  # the preview, before asking
    assert "erase this? it cannot be undone [y/N]" in captured.out
    assert code == (0 if erased else 1)
    assert (await server.get_lead("led_canary") is None) is erased
    if not erased:
        assert "not confirmed; nothing was erased" in captured.err


async def test_many_ids_are_wrapped_and_cut_short(
    tmp_path: Path, config: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = SQLiteStore(f"sqlite:///{db}")
    await store.open()
    ids = [f"led_{i:04}" for i in range(2000)]
    await store.ingest(
        [LeadIn(i, payload(i, "many@x.io", "+1", "M")) for i in ids], ["crm"], [], T0
    )
    await store.close()

    code = await cli("erase", "--email", "many@x.io", "--config", str(config), "--yes")

    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("erased 2000 lead(s), 2000 delivery record(s)")
    assert max(len(line) for line in lines) <= 100
    assert "... and 1980 more (--json lists them all)" in lines[-2]
    assert sum(line.count("led_") for line in lines) == 20


async def test_progress_bar_on_a_terminal(
    server: SQLiteStore,
    config: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)

    code = await cli("erase", "--email", CANARY_EMAIL, "--config", str(config), "--yes")

    assert code == 0
    assert "erasing" in terminal.getvalue() and "5/5" in terminal.getvalue()
    assert await server.get_lead("led_canary") is None


async def test_a_blocked_checkpoint_is_reported_and_a_rerun_finishes_it(
    server: SQLiteStore,
    config: Path,
    db: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("bridge.store.sqlite.CHECKPOINT_TRIES", 2)
    reader = sqlite3.connect(db, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM leads").fetchone()  # pins the WAL snapshot

    code = await cli("erase", "--email", CANARY_EMAIL, "--config", str(config), "--yes")

    assert code == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("erased 2 lead(s)")
    assert "the data was erased, but the WAL checkpoint stayed blocked" in captured.err
    assert await server.get_lead("led_canary") is None
    reader.execute("COMMIT")
    reader.close()

    code = await cli("erase", "--email", CANARY_EMAIL, "--config", str(config), "--yes")

    assert code == 0
    assert "nothing to erase" in capsys.readouterr().out
    assert canary_hits(db) == []
