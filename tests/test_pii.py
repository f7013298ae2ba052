"""End to end: no email, phone, secret or access token ever reaches a log line or an
HTTP error body, whatever path the lead takes (accepted, duplicate, quarantined,
rejected, retried after a failing destination that echoes the data back)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable

import httpx
import pytest

from bridge.app import create_app
from bridge.destinations import Runtime
from bridge.store.sqlite import SQLiteStore
from tests.conftest import make_lead
from tests.connectors.fake_http import Answer, FakeHTTP, Seen
from tests.waiting import eventually

EMAIL = "pii.canary.7f3a@canary-mail.example"
PHONE = "+15557654321987"
HEADER_SECRET = "hdr-canary-secret-5b1e9c"
PATH_SECRET = "pathcanary9d2f7e"
ACCESS_TOKEN = "tok-canary-access-4c8a11"
ADMIN_TOKEN = "adm-canary-token-61d0aa"
CANARIES = [
    EMAIL,
    EMAIL.split("@")[0],
    PHONE,
    PHONE.lstrip("+"),
    HEADER_SECRET,
    PATH_SECRET,
    ACCESS_TOKEN,
    ADMIN_TOKEN,
]


class EchoingDestination(FakeHTTP):
    """Fails the first attempt of each lead with a body quoting everything back."""

    def __init__(self, echo: bytes) -> None:
        super().__init__()
        self.echo = echo
        self.seen: dict[str, int] = {}

    def _next(self, seen: Seen) -> Answer:
        with self._lock:
            self.requests.append(seen)
            key = seen.headers["webhook-id"]
            self.seen[key] = self.seen.get(key, 0) + 1
            if self.seen[key] == 1:
                return Answer(503, self.echo)
            return Answer(200, b'{"id": "remote-1"}', {"Content-Type": "application/json"})


def hits(text: str) -> list[str]:
    lowered = text.lower()
    return [c for c in CANARIES if c.lower() in lowered]


async def test_no_canary_in_any_log_line_or_error_body(
    make_runtime: Callable[..., Runtime],
    log_stream: io.StringIO,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # The destination fails once per lead with a body that quotes everything back.
    echo = json.dumps({"error": f"duplicate {EMAIL} {PHONE}", "auth": f"Bearer {ACCESS_TOKEN}"})
    sink = EchoingDestination(echo.encode()).start()
    hook_url = f"{sink.url}/in"
    runtime = make_runtime(
        auth={"header_secrets": [HEADER_SECRET], "path_secrets": [PATH_SECRET]},
        admin={"tokens": [ADMIN_TOKEN]},
        worker={"poll_interval": 0.02},
        destinations=[
            {
                "name": "crm",
                "type": "webhook",
                "settings": {
                    "url": hook_url,
                    "allow_private": True,
                    "headers": {"Authorization": f"Bearer {ACCESS_TOKEN}"},
                },
                "retry": {"schedule": [0.05], "jitter": 0, "connect_retries": 0},
            }
        ],
    )
    store = SQLiteStore(runtime.config.storage.url, synchronous="NORMAL")
    await store.open()
    app = create_app(runtime, store=store)
    responses: list[httpx.Response] = []
    hook = f"/lead/webhook/{PATH_SECRET}"  # both secrets are required
    good = {"authorization": HEADER_SECRET, "content-type": "application/json"}
    lead_a = make_lead("led_pii_a", email=EMAIL, phone=PHONE)
    lead_b = make_lead("led_pii_b", email=EMAIL.upper(), phone=PHONE)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="https://test"
            ) as client,
        ):
            post = client.post
            responses += [
                await post(hook, json=[lead_a], headers=good),
                await post(hook, json=[lead_b], headers=good),
                await post(hook, json=[lead_a], headers=good),  # duplicate
                await post(hook, json=[], headers=good),  # probe
                # rejected: wrong secret, wrong path secret, broken JSON, not an array
                await post(hook, json=[lead_a], headers={"authorization": "nope"}),
                await post(f"{hook}x", json=[lead_a], headers=good),
                await post(
                    hook,
                    content=f'[{{"id": "led_pii_c", "data": {{"email": "{EMAIL}", "phone": "{PHONE}"',
                    headers=good,
                ),
                await post(hook, json={"email": EMAIL, "phone": PHONE}, headers=good),
                # quarantined element next to a valid one
                await post(
                    hook,
                    json=[{"id": 7, "data": {"email": EMAIL, "phone": PHONE}}],
                    headers=good,
                ),
                await post(hook, content=b"x" * 2_000_000, headers=good),  # too large
                await client.get(
                    "/admin/status", headers={"authorization": f"Bearer {HEADER_SECRET}"}
                ),
                await client.get(
                    "/admin/leads/led_nope", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
                ),
                await client.post(
                    "/admin/replay",
                    json={"lead_id": EMAIL, "force": "yes"},
                    headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
                ),
            ]

            async def two_delivered() -> bool:
                return len(await store.list_deliveries(status="delivered")) == 2

            await eventually(two_delivered, "two deliveries")
            rows = await store.list_deliveries(status="delivered")
            responses.append(
                await client.get(
                    "/admin/metrics", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
                )
            )
    finally:
        await store.close()
        sink.stop()
    seen = sink.seen

    # the flow really happened: two leads, each failed once then delivered
    assert [r.status_code for r in responses[:4]] == [200, 200, 200, 200]
    assert sorted(seen.values()) == [2, 2], seen
    assert len(rows) == 2
    errors = [r for r in responses if r.status_code >= 400]
    assert len(errors) >= 7, [r.status_code for r in responses]
    captured = log_stream.getvalue()
    assert "led_pii_a" in captured and '"outcome": "retry"' in captured

    assert hits(captured) == [], "canary in the JSON log output"
    assert hits(caplog.text) == [], "canary in a captured log record"
    for r in errors:
        assert hits(r.text) == [], f"canary in the {r.status_code} body of {r.request.url.path}"
    assert hits(responses[-1].text) == [], "canary in /metrics"
