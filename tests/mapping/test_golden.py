"""The seed's example lead through config.example.yaml and through the default mappings."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.destinations import Runtime, load_runtime
from bridge.mapping import DEFAULT_MAPPINGS, compile_mapping

ROOT = Path(__file__).parents[2]
GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def example_runtime() -> Runtime:
    # No environment: the example's secrets are unset, as in a user's CI.
    return load_runtime(ROOT / "config.example.yaml", lenient=True, env={})


@pytest.mark.parametrize("name", ["salesforce", "hubspot", "slack", "webhook"])
def test_seed_lead_through_the_example_config_matches_the_golden_record(
    example_runtime: Runtime, seed_lead: dict[str, Any], name: str
) -> None:
    dest = example_runtime.destination(name)
    assert dest is not None
    assert dest.when is None or dest.when.matches(seed_lead)
    expected = json.loads((GOLDEN / f"{name}.json").read_text())
    assert dest.mapping.apply(seed_lead).record == expected


def test_webhook_golden_is_the_lead_as_received(seed_lead: dict[str, Any]) -> None:
    assert json.loads((GOLDEN / "webhook.json").read_text()) == seed_lead


def test_example_config_warns_about_unset_secrets_without_values(example_runtime: Runtime) -> None:
    paths = {p for p, _ in example_runtime.warnings}
    assert "destinations[2].settings.access_token" in paths


def default_record(kind: str, lead: dict[str, Any]) -> dict[str, Any]:
    compiled = compile_mapping(None, unmapped="ignore", path="m", default=DEFAULT_MAPPINGS[kind])
    return compiled.apply(lead).record


def test_default_salesforce_lead(seed_lead: dict[str, Any]) -> None:
    expected = json.loads((GOLDEN / "salesforce.json").read_text())
    expected["Description"] = "I would like information for my department"
    assert default_record("salesforce", seed_lead) == expected


def test_default_salesforce_fills_required_fields(seed_lead: dict[str, Any]) -> None:
    seed_lead["data"] = {"email": " John@Example.COM ", "organization_size": "7"}
    assert default_record("salesforce", seed_lead) == {
        "LastName": "[not provided]",
        "Email": "john@example.com",
        "Company": "[not provided]",
        "LeadSource": "Web",
    }


def test_default_hubspot_contact(seed_lead: dict[str, Any]) -> None:
    assert default_record("hubspot", seed_lead) == json.loads((GOLDEN / "hubspot.json").read_text())


def test_default_slack_card(seed_lead: dict[str, Any]) -> None:
    expected = json.loads((GOLDEN / "slack.json").read_text())
    expected["created"] = "2018-07-12T16:29:42Z"
    assert default_record("slack", seed_lead) == expected


def test_destinations_without_mapping_use_the_type_default(
    make_runtime: Callable[..., Runtime], seed_lead: dict[str, Any], tmp_path: Path
) -> None:
    runtime = make_runtime(
        destinations=[
            {
                "name": "chat",
                "type": "slack",
                "settings": {"webhook_url": "https://hooks.slack.com/x"},
            },
            {"name": "file", "type": "jsonl", "settings": {"path": str(tmp_path / "l.jsonl")}},
        ]
    )
    chat, file = runtime.destinations
    assert chat.mapping.apply(seed_lead).record == default_record("slack", seed_lead)
    assert file.mapping.passthrough
    assert file.mapping.apply(seed_lead).record == seed_lead
