"""check-config and dev-cert."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.cli import main


def test_check_config_ok(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(
        destinations=[{"name": "file", "type": "jsonl", "settings": {"path": "x.jsonl"}}]
    )
    assert main(["check-config", "--config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "configuration OK: 1 destination(s)" in out
    assert "file: jsonl, concurrency" in out
    assert "the endpoint is open" in err


def test_check_config_reports_every_problem_with_exit_2(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(
        server={"behind_proxy": True, "prot": 1},
        destinations=[
            {"name": "x", "type": "hubspt"},
            {"name": "y", "type": "jsonl", "settings": {"path": "a", "fsink": True}},
            {
                "name": "z",
                "type": "jsonl",
                "settings": {"path": "a"},
                "mapping": {"a": {"source": "data.email", "transform": ["lowr"]}},
            },
        ],
    )
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "server.prot: unknown key; did you mean 'port'?" in err
    path.write_text(path.read_text().replace("  prot: 1\n", ""))
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "destinations[0].type: unknown connector type 'hubspt'; known types: " in err
    assert "destinations[1].settings.fsink: unknown key" in err
    assert "destinations[2].mapping.a" in err and "lowr" in err


def test_dev_cert(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    args = ["dev-cert", "--cert", str(cert), "--key", str(key), "--hostname", "leads.local"]
    assert main(args) == 0
    assert key.stat().st_mode & 0o077 == 0
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)  # a usable pair
    assert main(args) == 1 and "--force" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0
