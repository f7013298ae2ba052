"""The console in a real browser: headless Debian chromium driven by Playwright
against a `lead-bridge serve` process and a local fake destination.

scripts/test installs chromium (apt) and playwright (the dev extra) when they
are missing, so these tests run in CI; they fail, rather than skip, without them.
Set LEAD_BRIDGE_SCREENSHOTS=docs/img to write screenshots of the main pages.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bridge.tls import make_self_signed
from tests.connectors.fake_http import Answer, FakeHTTP
from tests.processes import BridgeProcess, free_port

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("LEAD_BRIDGE_CHROMIUM", "/usr/bin/chromium")
ADMIN = "browser-admin-token-0123456789"
SECRET = "browser-webhook-secret"
SHOTS = os.environ.get("LEAD_BRIDGE_SCREENSHOTS")
DEADLINE_MS = 60_000  # generous: a busy 2-core machine


def lead(lead_id: str, email: str, **data: Any) -> dict[str, Any]:
    return {
        "id": lead_id,
        "url": "https://some-site.com/page-with-lead-form/",
        "created": "2018-07-12T16:29:42Z",
        "data": {
            "first_name": "John",
            "last_name": "Doe",
            "phone": "+1 202 555 0143",
            "email": email,
            "organization_name": "Org",
            "organization_country": "United States",
            **data,
        },
    }


@pytest.fixture
def sink() -> Iterator[FakeHTTP]:
    # The destination starts broken: it rejects every lead (a permanent error: dead at once).
    with FakeHTTP(Answer(400, b'{"error":"field Company is required"}')) as server:
        yield server


@dataclass(frozen=True)
class Served:
    base: str
    trusted: ssl.SSLContext  # trusts the server's self-signed certificate


@pytest.fixture
def bridge(tmp_path: Path, sink: FakeHTTP) -> Iterator[Served]:
    port = free_port()
    certfile, keyfile = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    make_self_signed(certfile, keyfile)
    trusted = ssl.create_default_context(cafile=str(certfile))
    tree = {
        "server": {
            "host": "127.0.0.1",
            "port": port,
            "tls": {"certfile": str(certfile), "keyfile": str(keyfile)},
        },
        "auth": {"header_secrets": [SECRET]},
        "storage": {"url": f"sqlite:///{tmp_path / 'lead-bridge.db'}"},
        "admin": {"tokens": [ADMIN]},
        "worker": {"poll_interval": "0.2s"},
        "destinations": [
            {
                "name": "crm",
                "type": "webhook",
                "settings": {"url": sink.url + "/leads", "allow_private": True},
                "mapping": {
                    "email": {"source": "data.email", "required": True},
                    "name": {"template": "{data.first_name} {data.last_name}"},
                    "company": "data.organization_name",
                },
            },
            {"name": "archive", "type": "jsonl", "settings": {"path": str(tmp_path / "out.jsonl")}},
        ],
    }
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tree, sort_keys=False))
    process = BridgeProcess(
        ["serve", "--config", str(config)], cwd=tmp_path, log=tmp_path / "serve.log"
    )
    base = f"https://127.0.0.1:{port}"
    try:
        process.wait_ready(base + "/healthz", verify=trusted, timeout=60)
        yield Served(base, trusted)
    finally:
        process.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run scripts/test (it installs it) or apt-get install -y chromium"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield instance
        finally:
            instance.close()


def post_leads(served: Served, leads: list[dict[str, Any]]) -> None:
    response = httpx.post(
        served.base + "/lead/webhook",
        json=leads,
        headers={"Authorization": SECRET},
        verify=served.trusted,
    )
    assert response.status_code == 200, response.text


def shoot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"console-{name}.png"), full_page=True)


def reload_until(page: Any, selector: str) -> None:
    """Reload until ``selector`` is on the page (server-side state, no JS refresh here)."""
    deadline = time.monotonic() + DEADLINE_MS / 1000
    while page.locator(selector).count() == 0:
        assert time.monotonic() < deadline, f"{selector} never appeared on {page.url}"
        page.wait_for_timeout(250)
        page.reload()


def test_operator_finds_fixes_and_replays_a_lead(
    bridge: Served, browser: Any, sink: FakeHTTP
) -> None:
    post_leads(
        bridge,
        [
            lead("led_john", "john@example.com"),
            lead("led_mary", "mary@example.com", first_name="Mary"),
        ],
    )
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(DEADLINE_MS)

    # Log in: the console sends us to the login form first.
    page.goto(bridge.base + "/admin/ui/")
    assert "/admin/ui/login" in page.url
    shoot(page, "login")
    page.fill("#token", ADMIN)
    page.click("button[type=submit]")
    page.wait_for_selector("h1:has-text('Overview')")
    assert ADMIN not in page.url

    # Find the lead by email and open its timeline.
    page.click("nav >> text=Leads")
    page.fill("input[name=email]", "JOHN@example.com")
    page.click("#search button[type=submit]")
    page.wait_for_selector('tr[data-lead="led_john"]')
    assert page.locator("#results tbody tr").count() == 1
    shoot(page, "leads")
    assert "john@example.com" not in page.url
    page.click("text=led_john")
    page.wait_for_selector("h1:has-text('led_john')")

    # The failing destination turned the delivery into a dead letter.
    reload_until(page, 'tr[data-destination="crm"][data-status="dead"]')
    page.wait_for_selector('tr[data-destination="archive"][data-status="delivered"]')
    assert "HTTP 400" in page.inner_text('tr[data-destination="crm"]')
    # Personal fields are masked until clicked.
    email_cell = page.locator("details.reveal", has_text="j***@example.com").first
    assert not email_cell.evaluate("d => d.open")
    shoot(page, "timeline-dead")
    email_cell.locator("summary").click()
    assert email_cell.evaluate("d => d.open")

    page.click("nav >> text=Overview")
    reload_until(page, 'tr[data-destination="crm"] a:has-text("2")')
    shoot(page, "overview")

    # Fix the destination, then bulk-replay its dead letters with a preview.
    sink.default = Answer(200, b'{"id":"crm-1"}')
    page.click("nav >> text=Dead letters")
    page.select_option("select[name=destination]", "crm")
    page.click("form.filters button[type=submit]")
    page.wait_for_selector('tr[data-lead="led_john"]')
    shoot(page, "dead-letters")
    page.click("button[value=all]")
    preview = page.inner_text("#preview-count")
    assert re.search(r"\b2 dead deliveries will be requeued", preview), preview
    shoot(page, "dead-letters-preview")
    page.click("button:has-text('Requeue 2')")
    page.wait_for_selector("text=2 dead letters requeued")

    # Watch the lead become delivered: the timeline refreshes itself (console.js).
    page.goto(bridge.base + "/admin/ui/leads/led_john")
    page.wait_for_selector('tr[data-destination="crm"][data-status="delivered"]')
    shoot(page, "timeline-delivered")
    assert any(
        r.path == "/leads" and r.json()["email"] == "john@example.com" for r in sink.requests
    )

    # The mapping playground shows the error a lead without an email would get.
    page.click("nav >> text=Mapping playground")
    page.fill("#lead", json.dumps({"id": "led_bad", "data": {"first_name": "No Email"}}))
    page.click("button[value=run]")
    row = page.locator('#report tr[data-destination="crm"]')
    assert "Mapping error" in row.inner_text()
    assert "email" in row.locator(".mapping-error").inner_text()
    shoot(page, "playground")

    page.click("nav >> text=Destinations")
    page.click('tr[data-destination="crm"] button:has-text("Check credentials")')
    page.wait_for_selector("#result")
    shoot(page, "destinations")

    # Erase a person; searching for them finds nothing afterwards.
    page.click("nav >> text=Erase")
    page.fill("#erase input[name=email]", "mary@example.com")
    page.click("#erase button[type=submit]")
    assert page.inner_text("#counts").split("\n")[0].split()[-1] == "1"
    shoot(page, "erase-preview")
    page.click("button:has-text('Erase now')")
    page.wait_for_selector("#erase-done")
    assert "mary@example.com" not in page.content()
    page.click("nav >> text=Leads")
    page.fill("input[name=email]", "mary@example.com")
    page.click("#search button[type=submit]")
    page.wait_for_selector("#no-results")
    context.close()


def test_posts_without_csrf_or_session_are_refused(bridge: Served, browser: Any) -> None:
    post_leads(bridge, [lead("led_anna", "anna@example.com")])
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    page.set_default_timeout(DEADLINE_MS)
    page.goto(bridge.base + "/admin/ui/login")
    page.fill("#token", ADMIN)
    page.click("button[type=submit]")
    page.wait_for_selector("h1:has-text('Overview')")

    # Logged in, but a form post without the CSRF token is refused.
    response = page.request.post(
        bridge.base + "/admin/ui/erase/confirm", form={"lead_id": "led_anna"}
    )
    assert response.status == 403 and "CSRF" in response.text()

    # Without a session: pages lead to the login form, posts are refused.
    anonymous = browser.new_context(ignore_https_errors=True)
    other = anonymous.new_page()
    other.goto(bridge.base + "/admin/ui/leads/led_anna")
    assert "/admin/ui/login" in other.url
    response = other.request.post(
        bridge.base + "/admin/ui/erase/confirm", form={"lead_id": "led_anna"}
    )
    assert response.status == 401
    anonymous.close()

    # The lead is still there.
    page.goto(bridge.base + "/admin/ui/leads/led_anna")
    page.wait_for_selector("h1:has-text('led_anna')")
    context.close()
