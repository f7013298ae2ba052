"""The seed's curl example in, through config.example.yaml's five destinations, each
backed by a local fake reached through the real client library: every destination
receives the right record exactly once, also when the provider retries three times."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
import yaml

from bridge.app import create_app
from bridge.destinations import load_runtime
from bridge.store.sqlite import SQLiteStore
from tests.connectors.fake_http import FakeHTTP
from tests.connectors.fake_hubspot import FakeHubSpot
from tests.connectors.fake_salesforce import FakeSalesforce
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parent.parent
SEED_BODY = (ROOT / "tests" / "fixtures" / "seed_curl_body.json").read_bytes()
GOLDEN = ROOT / "tests" / "mapping" / "golden"
SECRET = "e2e-webhook-secret"
HUBSPOT_TOKEN = "pat-na1-e2e-token"
WHSEC = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

pytestmark = pytest.mark.slow


@pytest.fixture
def fakes() -> Iterator[dict[str, Any]]:
    with (
        FakeSalesforce(trustme.CA()) as sf,
        FakeHubSpot(access_token=HUBSPOT_TOKEN) as hs,
        FakeHTTP() as slack,
        FakeHTTP() as sink,
    ):
        yield {"salesforce": sf, "hubspot": hs, "slack": slack, "webhook": sink}


def example_config(tmp_path: Path, fakes: dict[str, Any]) -> Path:
    """config.example.yaml as shipped, pointed at the fakes instead of the internet."""
    tree = yaml.safe_load((ROOT / "config.example.yaml").read_text())
    tree["server"] = {"behind_proxy": True}
    tree["storage"] = {"url": f"sqlite:///{tmp_path / 'e2e.db'}"}
    tree["worker"] = {"poll_interval": "20ms"}
    by_name = {d["type"]: d for d in tree["destinations"]}
    by_name["jsonl"]["settings"]["path"] = str(tmp_path / "leads.jsonl")
    sf = by_name["salesforce"]["settings"]
    sf.update(fakes["salesforce"].settings("client_credentials"))
    by_name["hubspot"]["settings"]["host"] = fakes["hubspot"].url
    by_name["hubspot"]["settings"]["allow_private"] = True
    by_name["webhook"]["settings"]["allow_private"] = True
    by_name["slack"]["settings"]["allow_private"] = True
    by_name["webhook"]["settings"]["secret"] = WHSEC
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


async def test_seed_example_reaches_every_destination_exactly_once(
    tmp_path: Path, fakes: dict[str, Any]
) -> None:
    env = {
        "LEAD_WEBHOOK_SECRET": SECRET,
        "SALESFORCE_CLIENT_ID": "unused-overridden",
        "SALESFORCE_CLIENT_SECRET": "unused-overridden",
        "HUBSPOT_ACCESS_TOKEN": HUBSPOT_TOKEN,
        "SLACK_WEBHOOK_URL": fakes["slack"].url + "/services/T000/B000/XXXX",
        "LEAD_FORWARD_URL": fakes["webhook"].url + "/leads",
    }
    runtime = load_runtime(example_config(tmp_path, fakes), env=env)
    assert [d.config.type for d in runtime.destinations] == [
        "jsonl",
        "salesforce",
        "hubspot",
        "slack",
        "webhook",
    ]
    store = SQLiteStore(runtime.config.storage.url)
    await store.open()
    app = create_app(runtime, store=store)
    headers = {"Content-Type": "application/json", "Authorization": SECRET}
    try:
        async with (
            app.router.lifespan_context(app),  # type: ignore[arg-type]
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://t") as c,
        ):
            answers = [
                (await c.post("/lead/webhook", content=SEED_BODY, headers=headers)).json()
                for _ in range(3)  # the provider retries the same webhook
            ]

            async def all_delivered() -> bool:
                status = await store.status(0)
                return len(status.destinations) == 5 and all(
                    d.counts["delivered"] == 1 for d in status.destinations
                )

            await eventually(all_delivered, "one delivery per destination")
        # Leaving the lifespan stopped the engine (in-flight attempts finished):
        # a second delivery would be on record now.
        deliveries = await store.get_deliveries("led_slp3mt0qxvIXYUIK")
    finally:
        await store.close()

    assert answers == [
        {"accepted": 1, "duplicates": 0, "rejected": 0},
        {"accepted": 0, "duplicates": 1, "rejected": 0},
        {"accepted": 0, "duplicates": 1, "rejected": 0},
    ]
    assert {d.destination: (d.status, d.attempts) for d in deliveries} == {
        "audit-file": ("delivered", 1),
        "salesforce": ("delivered", 1),
        "hubspot": ("delivered", 1),
        "slack": ("delivered", 1),
        "webhook": ("delivered", 1),
    }
    lead = json.loads(SEED_BODY)[0]

    # JSON-lines: the lead as received, once.
    lines = (tmp_path / "leads.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["record"] == lead

    # Salesforce: one upsert on the external id, the golden Lead record.
    upserts = fakes["salesforce"].calls("sobjects")
    assert len(upserts) == 1
    assert upserts[0].method == "PATCH"
    assert upserts[0].path.endswith("/sobjects/Lead/Lead_Bridge_Id__c/led_slp3mt0qxvIXYUIK")
    assert upserts[0].body == json.loads((GOLDEN / "salesforce.json").read_text())
    sf_delivery = next(d for d in deliveries if d.destination == "salesforce")
    assert sf_delivery.remote_id and sf_delivery.remote_id.startswith("00Q")

    # HubSpot: one batch upsert by email with the golden properties.
    [hs_request] = fakes["hubspot"].requests
    body = hs_request.body
    assert [i["idProperty"] for i in body["inputs"]] == ["email"]
    assert body["inputs"][0]["properties"] == json.loads((GOLDEN / "hubspot.json").read_text())

    # Slack: one lead card.
    [slack_request] = fakes["slack"].requests
    message = slack_request.json()
    assert "John Doe" in message["text"]
    assert message["blocks"][0]["type"] == "header"

    # Webhook: the lead as received, signed, with a stable webhook-id.
    [hook] = fakes["webhook"].requests
    assert hook.json() == json.loads((GOLDEN / "webhook.json").read_text()) == lead
    assert hook.headers["webhook-id"].startswith("msg_")
    assert hook.headers["webhook-signature"].startswith("v1,")
