"""The base install (no extras) runs the SQLite + webhook/JSON-lines/Slack path.

The Salesforce, HubSpot and PostgreSQL libraries are made unimportable in a
real `lead-bridge serve` process (a ``sitecustomize`` on PYTHONPATH blocks them,
in the SQLite writer child too); the quickstart path must still take a lead to
its JSON-lines file, and `lead-bridge connectors` must name the missing extras.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from tests.processes import BridgeProcess, free_port
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
EXTRA_ONLY = ("simple_salesforce", "jwt", "hubspot", "psycopg", "psycopg_pool", "requests")

BLOCKER = f"""
import sys

BLOCKED = {EXTRA_ONLY!r}


class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, _Blocker())
"""


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    path = os.pathsep.join(p for p in (str(site), str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, "LEAD_WEBHOOK_SECRET": "base-install-secret"}


def test_the_blocker_blocks(base_env: dict[str, str]) -> None:
    code = "import importlib.util as u; print(u.find_spec('hubspot'))"
    result = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **base_env}, capture_output=True, text=True
    )
    assert "ModuleNotFoundError" in result.stderr


def test_connectors_names_the_extras(base_env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "connectors"],
        env={**os.environ, **base_env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[2:]}
    assert "no: pip install 'lead-bridge[salesforce]'" in rows["salesforce"]
    assert "no: pip install 'lead-bridge[hubspot]'" in rows["hubspot"]
    for name in ("slack", "webhook", "jsonl"):
        assert rows[name].split()[3] == "yes"


@pytest.mark.slow
def test_quickstart_path_runs_without_any_extra(tmp_path: Path, base_env: dict[str, str]) -> None:
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        textwrap.dedent(
            f"""
            server:
              host: 127.0.0.1
              port: {port}
              tls: {{certfile: ./tls/cert.pem, keyfile: ./tls/key.pem, self_signed: true}}
            auth: {{header_secrets: ["${{LEAD_WEBHOOK_SECRET}}"]}}
            storage: {{url: "sqlite:///./lead-bridge.db"}}
            destinations:
              - {{name: file, type: jsonl, settings: {{path: ./leads.jsonl}}}}
              - name: hook
                type: webhook
                enabled: false
                settings: {{url: "https://hooks.example.com/leads"}}
              - name: chat
                type: slack
                enabled: false
                settings: {{webhook_url: "https://hooks.slack.com/services/T/B/X"}}
            """
        )
    )
    bridge = BridgeProcess(
        ["serve", "--config", str(config)], tmp_path, tmp_path / "serve.log", env=base_env
    )
    try:
        url = f"https://127.0.0.1:{port}"
        bridge.wait_ready(url + "/readyz", verify=False, timeout=120)
        answer = httpx.post(
            url + "/lead/webhook",
            content=(ROOT / "tests/fixtures/seed_curl_body.json").read_bytes(),
            headers={"Authorization": "base-install-secret", "Content-Type": "application/json"},
            verify=ssl.create_default_context(cafile=tmp_path / "tls/cert.pem"),
            timeout=30,
        )
        assert answer.json() == {"accepted": 1, "duplicates": 0, "rejected": 0}
        out = tmp_path / "leads.jsonl"
        wait_until(lambda: out.exists() and bool(out.read_text()), "the lead in leads.jsonl")
        [line] = out.read_text().splitlines()
        assert json.loads(line)["lead_id"] == "led_slp3mt0qxvIXYUIK"
        assert bridge.terminate(60) == 0
        log = bridge.output()
        assert "ModuleNotFoundError" not in log and "Traceback" not in log
    finally:
        bridge.close()
