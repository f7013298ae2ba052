"""check-config and dev-cert."""

from __future__ import annotations

import json
import ssl
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.cli import main
from tests.connectors.fake_http import FakeHTTP
from tests.processes import free_port


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


# ------------------------------------------------------------------ one pass


def test_every_problem_in_one_run_as_the_readme_shows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LEAD_WEBHOOK_SECRET", raising=False)
    monkeypatch.delenv("LB_TEST_PORT", raising=False)
    monkeypatch.delenv("LB_TEST_SLACK", raising=False)
    path = tmp_path / "bad.yaml"
    path.write_text(
        textwrap.dedent(
            """
            server: {prot: 8443, behind_proxy: true, max_body_bytes: "${LB_TEST_PORT}"}
            auth: {header_secrets: ["${LEAD_WEBHOOK_SECRET}"]}
            destinations:
              - {name: file, type: jsonl, settings: {path: x.jsonl}}
              - {name: crm, type: hubspt}
              - {name: chat, type: slack, settings: {webhook_url: "${LB_TEST_SLACK}"}}
            """
        )
    )
    assert main(["check-config", "--config", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "lead-bridge: configuration error"
    assert set(lines[1:]) == {
        "  server.max_body_bytes: environment variable LB_TEST_PORT is not set",
        "  auth.header_secrets[0]: environment variable LEAD_WEBHOOK_SECRET is not set",
        "  server.prot: unknown key; did you mean 'port'?",
        "  destinations[1].type: unknown connector type 'hubspt'; known types: hubspot, "
        "jsonl, salesforce, slack, webhook (or 'module:ClassName' for a custom connector)",
        "  destinations[2].settings.webhook_url: environment variable LB_TEST_SLACK is not set",
    }  # and no second report of the unset value as "expected an integer"


# ------------------------------------------------------------------ parity with serve

PEM_JUNK = "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"


def broken_configs(tmp_path: Path) -> dict[str, tuple[dict[str, Any], str]]:
    (tmp_path / "junk.pem").write_text(PEM_JUNK)
    (tmp_path / "a-file").write_text("")
    sf = {"auth": {"mode": "client_credentials", "client_id": "id", "client_secret": "s"}}
    return {
        "tls files missing": (
            {"server": {"tls": {"certfile": "nope/cert.pem", "keyfile": "nope/key.pem"}}},
            "server.tls.certfile: file nope/cert.pem does not exist",
        ),
        "tls not a certificate": (
            {"server": {"tls": {"certfile": "junk.pem", "keyfile": "junk.pem"}}},
            "server.tls: cannot use junk.pem with junk.pem",
        ),
        "no https": ({"server": {}}, "server.tls: HTTPS is required"),
        "self-signed where nothing can be written": (
            {
                "server": {
                    "tls": {
                        "certfile": "a-file/c.pem",
                        "keyfile": "a-file/k.pem",
                        "self_signed": True,
                    }
                }
            },
            "server.tls.certfile: cannot create a-file/c.pem: a-file is not a directory",
        ),
        "plugin directory missing": (
            {"server": {"behind_proxy": True}, "plugins": {"paths": ["plugins-not-here"]}},
            "plugins.paths[0]: directory plugins-not-here does not exist",
        ),
        "database directory impossible": (
            {"server": {"behind_proxy": True}, "storage": {"url": "sqlite:///a-file/x.db"}},
            "storage.url: cannot create a-file/x.db: a-file is not a directory",
        ),
        "ca bundle not PEM": (
            {
                "server": {"behind_proxy": True},
                "destinations": [
                    {
                        "name": "crm",
                        "type": "salesforce",
                        "settings": {**sf, "ca_bundle": "junk.pem"},
                    }
                ],
            },
            "destinations[0].settings.ca_bundle: cannot load CA certificates from junk.pem",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "tls files missing",
        "tls not a certificate",
        "no https",
        "self-signed where nothing can be written",
        "plugin directory missing",
        "database directory impossible",
        "ca bundle not PEM",
    ],
)
def test_check_config_fails_exactly_where_serve_fails(
    case: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    tree, expected = broken_configs(tmp_path)[case]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tree))
    assert main(["check-config", "--config", str(path)]) == 2
    checked = capsys.readouterr().err
    assert f"  {expected}" in checked
    # serve stops at the same problem, with the same words, before binding a port
    assert main(["serve", "--config", str(path), "--port", "1"]) == 2
    assert capsys.readouterr().err == checked
    assert not (tmp_path / "data").exists()


def test_missing_sdks_name_the_extra(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in ("simple_salesforce", "hubspot", "psycopg"):
        monkeypatch.setitem(sys.modules, module, None)  # not installed
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "server": {"behind_proxy": True},
                "storage": {"url": "postgresql://lb@db.internal/lb"},
                "destinations": [
                    {
                        "name": "crm",
                        "type": "salesforce",
                        "settings": {
                            "auth": {
                                "mode": "client_credentials",
                                "client_id": "i",
                                "client_secret": "s",
                            }
                        },
                    },
                    {"name": "hs", "type": "hubspot", "settings": {"access_token": "pat-na1-x"}},
                ],
            }
        )
    )
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert (
        "storage.url: PostgreSQL needs psycopg, which is not installed: "
        "pip install 'lead-bridge[postgres]'" in err
    )
    assert (
        "destinations[0].type: type 'salesforce' needs simple-salesforce, which is not "
        "installed: pip install 'lead-bridge[salesforce]'" in err
    )
    assert "destinations[1].type: type 'hubspot' needs hubspot-api-client" in err


def test_ok_names_the_webhook_url(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(server={"behind_proxy": True, "port": 9443, "path": "/in"})
    assert main(["check-config", "--config", str(path)]) == 0
    assert "webhook: POST http://127.0.0.1:9443/in" in capsys.readouterr().out


# ------------------------------------------------------------------ --connect


def test_connect_checks_each_destination_without_sending_a_lead(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeHTTP() as receiver:
        refused = free_port()  # nothing listens there
        path = tmp_path / "config.yaml"
        hook = {"allow_private": True, "timeout": 30}
        path.write_text(
            yaml.safe_dump(
                {
                    "server": {"behind_proxy": True},
                    "destinations": [
                        {
                            "name": "up",
                            "type": "webhook",
                            "settings": {**hook, "url": receiver.url + "/leads"},
                        },
                        {
                            "name": "down",
                            "type": "webhook",
                            "settings": {**hook, "url": f"http://127.0.0.1:{refused}/x"},
                        },
                        {
                            "name": "file",
                            "type": "jsonl",
                            "settings": {"path": str(tmp_path / "o.jsonl")},
                        },
                    ],
                }
            )
        )
        assert main(["check-config", "--config", str(path), "--connect"]) == 1
        out, err = capsys.readouterr()
        assert main(["check-config", "--config", str(path), "--connect", "-d", "up", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        methods = [r.method for r in receiver.requests]
    assert "- up: webhook" in out and "connect: OK:" in out
    assert "connect: FAILED: webhook connection failed" in out
    assert f"connect: OK: {tmp_path} is writable" in out
    assert "connection check failed: down" in err
    assert methods == ["HEAD", "HEAD"]  # no lead was posted
    up = next(d for d in report["destinations"] if d["name"] == "up")
    assert report["ok"] is True and up["connect"]["ok"] is True
    assert "connect" not in next(d for d in report["destinations"] if d["name"] == "down")


def test_connect_to_an_unknown_destination_is_a_usage_error(
    write_config: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(server={"behind_proxy": True})
    assert main(["check-config", "--config", str(path), "--connect", "-d", "nope"]) == 2
    assert "--destination: no destination named 'nope'" in capsys.readouterr().err
