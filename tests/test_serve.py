"""`lead-bridge serve` as a real process: HTTPS, startup checks, signals, crash safety."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import yaml

from bridge.store.base import LeadIn
from bridge.store.sqlite import SQLiteStore
from tests.processes import BridgeProcess, free_port
from tests.waiting import DEADLINE, wait_until

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).parent / "fixtures"
SEED_BODY = (FIXTURES / "seed_curl_body.json").read_bytes()
SECRET = "YOUR_SECRET_KEY_HERE-but-real"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> tuple[Path, Path, Path]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    certfile, keyfile, cafile = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(certfile), append=True)
    cert.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(cafile))
    return certfile, keyfile, cafile


def write(tmp_path: Path, tree: dict[str, Any]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


@pytest.fixture
def processes() -> Iterator[list[BridgeProcess]]:
    started: list[BridgeProcess] = []
    yield started
    for proc in started:
        proc.close()


def https_config(tmp_path: Path, tls_files: tuple[Path, Path, Path], port: int) -> dict[str, Any]:
    certfile, keyfile, _ = tls_files
    return {
        "server": {
            "host": "127.0.0.1",
            "port": port,
            "tls": {"certfile": str(certfile), "keyfile": str(keyfile)},
        },
        "auth": {"header_secrets": ["${TEST_WEBHOOK_SECRET}"]},
        "storage": {"url": f"sqlite:///{tmp_path / 'bridge.db'}"},
        "worker": {"poll_interval": "50ms", "lease": "5s"},
        "destinations": [
            {"name": "file", "type": "jsonl", "settings": {"path": str(tmp_path / "leads.jsonl")}}
        ],
    }


def start(
    processes: list[BridgeProcess], tmp_path: Path, config: Path, *args: str
) -> BridgeProcess:
    proc = BridgeProcess(
        ["serve", "--config", str(config), *args],
        cwd=tmp_path,
        log=tmp_path / f"serve-{len(processes)}.log",
        env={"TEST_WEBHOOK_SECRET": SECRET},
    )
    processes.append(proc)
    return proc


def stored_ids(db: Path) -> list[str]:
    async def read() -> list[str]:
        store = SQLiteStore(f"sqlite:///{db}")
        await store.open()
        try:
            return await store._read(lambda c: [r[0] for r in c.execute("SELECT id FROM leads")])
        finally:
            await store.close()

    return asyncio.run(read())


def test_seed_curl_example_over_verified_tls(
    tmp_path: Path, tls_files: tuple[Path, Path, Path], processes: list[BridgeProcess]
) -> None:
    port = free_port()
    proc = start(processes, tmp_path, write(tmp_path, https_config(tmp_path, tls_files, port)))
    context = ssl.create_default_context(cafile=str(tls_files[2]))
    proc.wait_ready(f"https://127.0.0.1:{port}/healthz", verify=context)

    with httpx.Client(verify=context, timeout=10) as client:
        # Exactly the seed's curl example: its headers and its body, byte for byte.
        response = client.post(
            f"https://localhost:{port}/lead/webhook",
            content=SEED_BODY,
            headers={"Content-Type": "application/json", "Authorization": SECRET},
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": 0}
        # The provider retries: the same lead is recognised and not delivered twice.
        again = client.post(
            f"https://localhost:{port}/lead/webhook",
            content=SEED_BODY,
            headers={"Content-Type": "application/json", "Authorization": SECRET},
        )
        assert again.json() == {"accepted": 0, "duplicates": 1, "rejected": 0}
        wrong = client.post(
            f"https://localhost:{port}/lead/webhook",
            content=SEED_BODY,
            headers={"Authorization": "x"},
        )
        assert wrong.status_code == 401
        # TLS 1.2 is the minimum.
        assert response.extensions["network_stream"].get_extra_info("ssl_object").version() in (
            "TLSv1.2",
            "TLSv1.3",
        )

    out = tmp_path / "leads.jsonl"
    wait_until(lambda: out.exists() and bool(out.read_text().strip()), "the lead in leads.jsonl")
    lines = out.read_text().splitlines()
    assert len(lines) == 1
    assert json.loads(SEED_BODY)[0]["data"]["email"] in lines[0]
    assert proc.terminate() == 0
    log = proc.output()
    assert SECRET not in log
    assert "sergunich@gmail.com" not in log
    assert "led_slp3mt0qxvIXYUIK" in log


def test_tls_min_version_is_enforced(
    tmp_path: Path, tls_files: tuple[Path, Path, Path], processes: list[BridgeProcess]
) -> None:
    port = free_port()
    tree = https_config(tmp_path, tls_files, port)
    tree["server"]["tls"]["min_version"] = "1.3"
    proc = start(processes, tmp_path, write(tmp_path, tree))
    ok = ssl.create_default_context(cafile=str(tls_files[2]))
    proc.wait_ready(f"https://127.0.0.1:{port}/healthz", verify=ok)
    old = ssl.create_default_context(cafile=str(tls_files[2]))
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"https://localhost:{port}/healthz", verify=old)


def test_lead_survives_sigkill_right_after_200(
    tmp_path: Path, tls_files: tuple[Path, Path, Path], processes: list[BridgeProcess]
) -> None:
    port = free_port()
    tree = https_config(tmp_path, tls_files, port)
    tree["destinations"] = []
    config = write(tmp_path, tree)
    proc = start(processes, tmp_path, config)
    cafile = ssl.create_default_context(cafile=str(tls_files[2]))
    proc.wait_ready(f"https://127.0.0.1:{port}/healthz", verify=cafile)
    ids = [f"led_kill_{i}" for i in range(20)]
    with httpx.Client(verify=cafile, timeout=10) as client:
        for lead_id in ids:
            body = [{"id": lead_id, "data": {"first_name": "K"}}]
            response = client.post(
                f"https://127.0.0.1:{port}/lead/webhook",
                json=body,
                headers={"Authorization": SECRET},
            )
            assert response.status_code == 200
    proc.kill()  # no chance to flush anything after the last 200
    assert sorted(stored_ids(tmp_path / "bridge.db")) == sorted(ids)
    # And it starts again on the same database.
    again = start(processes, tmp_path, config)
    again.wait_ready(f"https://127.0.0.1:{port}/healthz", verify=cafile)
    assert again.terminate() == 0


def test_bad_config_exits_2_before_binding(tmp_path: Path, processes: list[BridgeProcess]) -> None:
    port = free_port()
    config = write(
        tmp_path,
        {
            "server": {"port": port, "behind_proxy": True, "prot": 1},
            "auth": {"header_secrets": ["${UNSET_SECRET_FOR_TEST}"]},
        },
    )
    proc = start(processes, tmp_path, config)
    assert proc.proc.wait(DEADLINE) == 2
    out = proc.output()
    assert "auth.header_secrets[0]: environment variable UNSET_SECRET_FOR_TEST is not set" in out
    assert "Uvicorn running" not in out


def test_a_used_port_fails_before_any_worker_starts(
    tmp_path: Path, processes: list[BridgeProcess]
) -> None:
    async def queue_a_lead() -> None:
        store = SQLiteStore(f"sqlite:///{tmp_path / 'bridge.db'}")
        await store.open()
        try:
            await store.ingest([LeadIn("led_waiting", '{"id": "led_waiting"}')], ["file"], [], 1.0)
        finally:
            await store.close()

    asyncio.run(queue_a_lead())  # a delivery the workers would make at once
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write(
            tmp_path,
            {
                "server": {"host": "127.0.0.1", "port": port, "behind_proxy": True},
                "storage": {"url": f"sqlite:///{tmp_path / 'bridge.db'}"},
                "destinations": [
                    {
                        "name": "file",
                        "type": "jsonl",
                        "settings": {"path": str(tmp_path / "out.jsonl")},
                    }
                ],
            },
        )
        proc = start(processes, tmp_path, config)
        assert proc.proc.wait(DEADLINE) == 1
    out = proc.output()
    assert (
        f"lead-bridge: cannot listen on 127.0.0.1:{port}: Address already in use "
        "(another process, perhaps another lead-bridge serve, is listening there)" in out
    )
    assert "application startup" not in out.lower() and "event=startup" not in out
    assert not (tmp_path / "out.jsonl").exists()  # the waiting lead was not delivered


def test_plain_http_is_refused_unless_behind_proxy(
    tmp_path: Path, processes: list[BridgeProcess]
) -> None:
    config = write(tmp_path, {"server": {"port": free_port()}})
    proc = start(processes, tmp_path, config)
    assert proc.proc.wait(DEADLINE) == 2
    assert "server.tls: HTTPS is required" in proc.output()


def test_self_signed_certificate_is_created_on_first_run(
    tmp_path: Path, processes: list[BridgeProcess]
) -> None:
    port = free_port()
    tls = {"certfile": "tls/cert.pem", "keyfile": "tls/key.pem", "self_signed": True}
    config = write(
        tmp_path,
        {
            "server": {"host": "127.0.0.1", "port": port, "tls": tls},
            "storage": {"url": "sqlite:///./data/lead-bridge.db"},
        },
    )
    proc = start(processes, tmp_path, config)
    proc.wait_ready(f"https://127.0.0.1:{port}/healthz", verify=False)
    assert (tmp_path / "tls" / "cert.pem").exists()
    assert (tmp_path / "tls" / "key.pem").stat().st_mode & 0o077 == 0
    assert proc.terminate() == 0


def test_metrics_on_a_separate_port(
    tmp_path: Path, tls_files: tuple[Path, Path, Path], processes: list[BridgeProcess]
) -> None:
    port, metrics_port = free_port(), free_port()
    tree = https_config(tmp_path, tls_files, port)
    tree["metrics"] = {"port": metrics_port, "host": "127.0.0.1"}
    proc = start(processes, tmp_path, write(tmp_path, tree))
    context = ssl.create_default_context(cafile=str(tls_files[2]))
    proc.wait_ready(f"https://127.0.0.1:{port}/healthz", verify=context)
    with httpx.Client(verify=context, timeout=10) as client:
        client.post(
            f"https://127.0.0.1:{port}/lead/webhook",
            content=SEED_BODY,
            headers={"Authorization": SECRET},
        )
    delivered = 'lead_bridge_deliveries_total{destination="file",outcome="delivered"} 1.0'
    wait_until(
        lambda: delivered in httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text,
        "the delivery in /metrics",
    )
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    assert 'lead_bridge_leads_total{result="accepted"} 1.0' in text
    assert 'lead_bridge_deliveries_total{destination="file",outcome="delivered"} 1.0' in text
    assert "led_slp3mt0qxvIXYUIK" not in text and "sergunich" not in text
    assert proc.terminate() == 0
