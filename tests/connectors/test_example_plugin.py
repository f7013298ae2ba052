"""The README's example plugin, tested the way a connector author would test theirs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from bridge import registry
from bridge.errors import AuthError, PermanentError, RateLimited, RetryableError
from connectors.base import Connector
from connectors.testing import Scenario, check_connector

PLUGINS = Path(__file__).resolve().parents[2] / "examples" / "plugins"
HOOK = "https://example.webhook.office.com/workflows/abc/triggers/manual/paths/invoke"
RECORD: dict[str, Any] = {
    "title": "John Doe",
    "company": "Org",
    "email": "sergunich@gmail.com",
    "phone": "+123123123123123",
    "form_url": "https://some-site.com/page-with-lead-form/",
    "lead_id": "led_slp3mt0qxvIXYUIK",
}


@pytest.fixture
def teams(monkeypatch: pytest.MonkeyPatch) -> type[Connector]:
    monkeypatch.setattr(registry, "plugin_paths", [])  # undo add_plugin_paths afterwards
    registry.add_plugin_paths([PLUGINS])
    return registry.resolve("teams:TeamsConnector")


# using="httpx": respx patches the client, whatever its transport (the guarded one here).
@pytest.mark.respx(using="httpx")
async def test_contract(teams: type[Connector], respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(HOOK)
    await check_connector(
        teams,
        {"webhook_url": HOOK},
        RECORD,
        scenarios=[
            Scenario("accepted", lambda: route.respond(202)),
            Scenario("throttled", lambda: route.respond(429), expect=RateLimited),
            Scenario("bad card", lambda: route.respond(400), expect=PermanentError),
            Scenario("revoked", lambda: route.respond(401), expect=AuthError),
            Scenario("down", lambda: route.respond(502), expect=RetryableError),
            Scenario(
                "timeout",
                lambda: route.mock(side_effect=httpx.ReadTimeout("slow")),
                expect=RetryableError,
            ),
        ],
        accepted_fields=list(RECORD),
        rejected_fields=["FirstName"],
    )


@pytest.mark.respx(using="httpx")
async def test_sends_an_adaptive_card(teams: type[Connector], respx_mock: respx.MockRouter) -> None:
    route = respx_mock.post(HOOK).respond(202)
    connector = teams("teams", teams.Settings.model_validate({"webhook_url": HOOK}))
    from connectors.testing import sample_context

    result = await connector.send(RECORD, sample_context())
    await connector.close()
    assert result.status_code == 202
    body = json.loads(route.calls.last.request.content)
    card = body["attachments"][0]["content"]
    assert card["body"][0]["text"] == "John Doe"
    assert {"title": "Company", "value": "Org"} in card["body"][1]["facts"]
    assert card["actions"][0]["url"] == RECORD["form_url"]


def test_loads_from_yaml_with_plugins_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.destinations import load_runtime

    monkeypatch.setattr(registry, "plugin_paths", [])
    config = tmp_path / "config.yaml"
    config.write_text(
        f"plugins:\n  paths: [{PLUGINS}]\n"
        "destinations:\n"
        "  - name: teams-sales\n"
        '    type: "teams:TeamsConnector"\n'
        "    settings:\n"
        "      webhook_url: ${TEAMS_URL}\n"
    )
    runtime = load_runtime(config, env={"TEAMS_URL": HOOK})
    (destination,) = runtime.destinations
    assert destination.connector_cls.type_name == "teams"
    assert destination.concurrency == 1 and destination.rate_per_second == 2


async def test_uses_the_address_guard(teams: type[Connector]) -> None:
    """The example's client is the built-ins' seam: a private address is refused
    before any connection, as a permanent error that does not quote the URL."""
    from connectors.testing import sample_context

    url = "http://127.0.0.1:9/workflows/secret-part"
    connector = teams("teams", teams.Settings.model_validate({"webhook_url": url}))
    with pytest.raises(PermanentError, match=r"non-public address 127\.0\.0\.1") as info:
        await connector.send(RECORD, sample_context())
    await connector.close()
    assert "secret-part" not in str(info.value)
