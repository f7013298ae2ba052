"""`lead-bridge map`: output and exit codes."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.cli import main


@pytest.fixture
def config(write_config: Callable[..., Path], tmp_path: Path) -> Path:
    return write_config(
        destinations=[
            {
                "name": "crm",
                "type": "jsonl",
                "settings": {"path": str(tmp_path / "crm.jsonl")},
                "mapping": {
                    "email": {"source": "data.email", "transform": ["lower"], "required": True},
                    "name": {"template": "{data.first_name} {data.last_name}"},
                },
            },
            {
                "name": "canada",
                "type": "jsonl",
                "settings": {"path": str(tmp_path / "ca.jsonl")},
                "when": {"field": "data.organization_country", "equals": "Canada"},
            },
        ]
    )


def write_lead(tmp_path: Path, body: Any) -> Path:
    path = tmp_path / "lead.json"
    path.write_text(body if isinstance(body, str) else json.dumps(body))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["map", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_good_lead(config: Path, tmp_path: Path, seed_lead: dict[str, Any], capsys: Any) -> None:
    code, out, err = run(
        capsys, "--config", str(config), "--lead", str(write_lead(tmp_path, seed_lead))
    )
    assert code == 0
    assert out.splitlines()[:5] == [
        "lead led_slp3mt0qxvIXYUIK",
        "  crm (jsonl): matched",
        "    {",
        '      "email": "sergunich@gmail.com",',
        '      "name": "John Doe"',
    ]
    assert "    unmapped data keys: middle_name, phone, position" in out
    assert "  canada (jsonl): skipped, `when` did not match" in out
    assert "unrouted" not in out and err == ""


def test_json_output(config: Path, tmp_path: Path, seed_lead: dict[str, Any], capsys: Any) -> None:
    lead_file = write_lead(tmp_path, [seed_lead])
    code, out, _ = run(capsys, "-c", str(config), "--lead", str(lead_file), "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] is True and report["warnings"] == []
    [lead] = report["leads"]
    assert lead["id"] == "led_slp3mt0qxvIXYUIK" and lead["unrouted"] is False
    crm, canada = lead["destinations"]
    assert crm["record"] == {"email": "sergunich@gmail.com", "name": "John Doe"}
    assert crm["matched"] is True and "error" not in crm
    assert canada == {"name": "canada", "type": "jsonl", "enabled": True, "matched": False}


def test_a_lead_failing_a_required_rule_exits_1(
    config: Path, tmp_path: Path, seed_lead: dict[str, Any], capsys: Any
) -> None:
    del seed_lead["data"]["email"]
    lead_file = write_lead(tmp_path, [seed_lead])
    code, out, _ = run(capsys, "--config", str(config), "--lead", str(lead_file))
    assert code == 1
    assert (
        "  crm (jsonl): MAPPING FAILED: email: required, but the lead has no value for it "
        "(data.email)" in out
    )
    code, out, _ = run(capsys, "--config", str(config), "--lead", str(lead_file), "--json")
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False
    assert report["leads"][0]["destinations"][0]["error"]["field"] == "email"


def test_unrouted_lead_is_reported(
    write_config: Callable[..., Path], tmp_path: Path, seed_lead: dict[str, Any], capsys: Any
) -> None:
    config = write_config(
        destinations=[
            {
                "name": "only-ca",
                "type": "jsonl",
                "settings": {"path": str(tmp_path / "x.jsonl")},
                "when": {"field": "data.organization_country", "in": ["Canada"]},
            }
        ]
    )
    code, out, _ = run(capsys, "-c", str(config), "--lead", str(write_lead(tmp_path, seed_lead)))
    assert code == 0
    assert "  unrouted: no enabled destination matched" in out


def test_stdin_and_webhook_arrays(
    config: Path, seed_lead: dict[str, Any], capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    second = {"id": "led_2", "data": {"email": "A@B.C", "organization_country": "canada"}}
    stdin = io.TextIOWrapper(io.BytesIO(json.dumps([seed_lead, second]).encode()))
    monkeypatch.setattr(sys, "stdin", stdin)
    code, out, _ = run(capsys, "-c", str(config), "--lead", "-", "--json")
    assert code == 0
    leads = json.loads(out)["leads"]
    assert [lead["id"] for lead in leads] == ["led_slp3mt0qxvIXYUIK", "led_2"]
    assert leads[1]["destinations"][0]["record"] == {"email": "a@b.c"}
    assert leads[1]["destinations"][1]["matched"] is True


def test_empty_webhook_array(config: Path, tmp_path: Path, capsys: Any) -> None:
    code, out, _ = run(capsys, "-c", str(config), "--lead", str(write_lead(tmp_path, [])))
    assert code == 0
    assert out == "no leads in the file (an empty webhook array)\n"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[{"id": "led_1",', "invalid JSON at line 1, column 17: Expecting property name"),
        ('"just text"', "the top level is str, expected a lead object"),
        ('[{"id": "a"}, 5]', "item 1 is int, expected a lead object"),
        (b"\xff\xfe{", "not UTF-8 text"),
    ],
)
def test_malformed_lead_file_exits_2(
    config: Path, tmp_path: Path, capsys: Any, body: str | bytes, message: str
) -> None:
    path = tmp_path / "bad.json"
    if isinstance(body, bytes):
        path.write_bytes(body)
    else:
        path.write_text(body)
    code, out, err = run(capsys, "-c", str(config), "--lead", str(path))
    assert code == 2 and out == ""
    assert err.startswith(f"lead-bridge map: {path}: ")
    assert message in err


def test_missing_lead_file_exits_2(config: Path, tmp_path: Path, capsys: Any) -> None:
    code, _, err = run(capsys, "-c", str(config), "--lead", str(tmp_path / "nope.json"))
    assert code == 2
    assert "cannot read lead file" in err


def test_bad_mapping_in_config_exits_2(
    write_config: Callable[..., Path], tmp_path: Path, capsys: Any
) -> None:
    config = write_config(
        destinations=[
            {
                "name": "x",
                "type": "jsonl",
                "settings": {"path": str(tmp_path / "x.jsonl")},
                "mapping": {"a": {"source": "data.a", "transform": ["lowr"]}},
            }
        ]
    )
    code, _, err = run(capsys, "-c", str(config), "--lead", str(write_lead(tmp_path, {})))
    assert code == 2
    assert "destinations[0].mapping.a.transform[0]: unknown transform 'lowr'; did you mean" in err


def test_unset_secrets_are_warnings_and_set_ones_are_never_printed(
    write_config: Callable[..., Path],
    tmp_path: Path,
    seed_lead: dict[str, Any],
    capsys: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MAP_TEST_UNSET_URL", raising=False)
    monkeypatch.setenv("MAP_TEST_TOKEN", "pat-na1-very-secret-token")
    config = write_config(
        destinations=[
            {"name": "chat", "type": "slack", "settings": {"webhook_url": "${MAP_TEST_UNSET_URL}"}},
            {"name": "crm", "type": "hubspot", "settings": {"access_token": "${MAP_TEST_TOKEN}"}},
        ]
    )
    code, out, err = run(capsys, "-c", str(config), "--lead", str(write_lead(tmp_path, seed_lead)))
    assert code == 0
    assert (
        "warning: destinations[0].settings.webhook_url: environment variable MAP_TEST_UNSET_URL"
        in err
    )
    assert "chat (slack): matched" in out and "crm (hubspot): matched" in out
    assert "very-secret" not in out + err


@pytest.mark.parametrize(
    ("lead", "reason"),
    [
        ({"data": {"email": "a@b.c"}}, "missing 'id'"),
        ({"id": 7, "data": {}}, "'id' must be a non-empty string, got a number"),
        ({"id": "led_1", "data": ["x"]}, "'data' must be an object, got an array"),
        ({"id": "led_1", "data": {"email": "\ud800@b.c"}}, "data.email holds a lone surrogate"),
    ],
)
def test_a_lead_intake_would_quarantine_is_reported_not_mapped(
    config: Path,
    tmp_path: Path,
    seed_lead: dict[str, Any],
    capsys: Any,
    lead: dict[str, Any],
    reason: str,
) -> None:
    path = tmp_path / "leads.json"
    path.write_text(json.dumps([seed_lead, lead]))  # \ud800 stays an escape in the file
    code, out, _ = run(capsys, "-c", str(config), "--lead", str(path))
    assert code == 1
    assert "lead #1\n  QUARANTINED by intake: " in out or "lead led_1\n  QUARANTINED" in out
    assert reason in out and "(stored for inspection, sent to no destination)" in out
    code, out, _ = run(capsys, "-c", str(config), "--lead", str(path), "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    first, second = report["leads"]
    assert "quarantined" not in first and first["destinations"]
    assert reason in second["quarantined"] and second["destinations"] == []
