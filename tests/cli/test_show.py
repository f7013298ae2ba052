"""``lead-bridge show`` against a real SQLite store (tests/cli/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.conftest import run


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
