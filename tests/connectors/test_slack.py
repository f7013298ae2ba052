from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from pydantic import ValidationError

from bridge import __version__
from bridge.errors import PermanentError, RateLimited, RetryableError
from connectors.base import DeliveryContext
from connectors.slack import SlackConnector, SlackSettings, build_message
from connectors.testing import Scenario, check_connector, sample_context
from tests.connectors.fake_http import Answer, FakeHTTP

HOOK = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"

CARD: dict[str, Any] = {
    "title": "John Doe",
    "company": "Org & <Sons>",
    "email": "sergunich@gmail.com",
    "phone": "+123123123123123",
    "position": "Agent",
    "location": "Montgomery, Alabama, United States",
    "company_size": "101-250",
    "form_url": "https://some-site.com/page-with-lead-form/",
    "lead_id": "led_slp3mt0qxvIXYUIK",
    "created": "2018-07-12T16:29:42Z",
}


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    # using="httpx" patches the client, so it intercepts whatever the transport.
    with respx.mock(using="httpx", assert_all_called=False) as mock:
        yield mock


@pytest.fixture
def make_connector() -> Iterator[Any]:
    made: list[SlackConnector] = []

    def make(url: str = HOOK, **settings: Any) -> SlackConnector:
        connector = SlackConnector("slack", SlackSettings(webhook_url=url, **settings))
        made.append(connector)
        return connector

    yield make


def ctx() -> DeliveryContext:
    return sample_context("slack", "led_slp3mt0qxvIXYUIK")


def test_card_layout() -> None:
    message = build_message(CARD, received_at=1_531_413_000.0)
    blocks = message["blocks"]
    assert blocks[0] == {"type": "header", "text": {"type": "plain_text", "text": "John Doe"}}
    fields = [f["text"] for f in blocks[1]["fields"]]
    assert fields[0] == "*Company*\nOrg &amp; &lt;Sons&gt;"
    assert fields[1] == "*Email*\n<mailto:sergunich@gmail.com|sergunich@gmail.com>"
    assert "*Phone*\n+123123123123123" in fields
    assert "*Position*\nAgent" in fields
    assert "*Location*\nMontgomery, Alabama, United States" in fields
    assert "*Company size*\n101-250" in fields
    assert blocks[2]["text"]["text"] == "*Form*\n<https://some-site.com/page-with-lead-form/>"
    context_text = blocks[3]["elements"][0]["text"]
    assert context_text == (
        "Lead `led_slp3mt0qxvIXYUIK` · submitted 2018-07-12T16:29:42Z · received 2018-07-12 16:30 UTC"
    )
    assert message["text"] == "New lead: John Doe (Org &amp; &lt;Sons&gt;)"


def test_user_text_cannot_mention_or_link() -> None:
    message = build_message({"title": "x", "company": "<!channel> <https://evil|click>"})
    dumped = json.dumps(message["blocks"][1])
    assert "<!channel>" not in dumped and "<https://evil" not in dumped
    assert "&lt;!channel&gt;" in dumped


def test_missing_fields_are_left_out() -> None:
    message = build_message({"title": "Ada", "lead_id": "led_1"})
    assert [b["type"] for b in message["blocks"]] == ["header", "context"]


def test_long_values_are_clipped_to_block_kit_limits() -> None:
    message = build_message({"title": "A" * 500, "company": "B" * 5000})
    assert len(message["blocks"][0]["text"]["text"]) == 150
    assert len(message["blocks"][1]["fields"][0]["text"]) == 2000


def test_override_blocks_are_sent_as_is() -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*custom*"}}]
    assert build_message({"blocks": blocks, "text": "fallback"}) == {
        "text": "fallback",
        "blocks": blocks,
    }
    assert build_message({"text": "just *text*"}) == {"text": "just *text*"}


def test_text_with_card_fields_replaces_the_fallback() -> None:
    message = build_message({"title": "Ada", "text": "Lead for <team>"})
    assert message["text"] == "Lead for &lt;team&gt;"
    assert message["blocks"][0]["text"]["text"] == "Ada"


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({}, "nothing to post"),
        ({"blocks": "not a list"}, "list of Block Kit objects"),
        ({"blocks": [1, 2]}, "list of Block Kit objects"),
    ],
)
def test_unusable_records_are_permanent(record: dict[str, Any], problem: str) -> None:
    with pytest.raises(PermanentError, match=problem):
        build_message(record)


def test_check_fields_lists_accepted_names() -> None:
    settings = SlackSettings(webhook_url=HOOK)  # type: ignore[arg-type]
    assert SlackConnector.check_fields(settings, ["title", "email", "text"]) == []
    problems = SlackConnector.check_fields(settings, ["title", "Email"])
    assert problems[0][0] == "Email"
    assert "accepted: title, company, email" in problems[0][1]
    mixed = SlackConnector.check_fields(settings, ["blocks", "title"])
    assert mixed == [("title", "card fields cannot be combined with 'blocks'; map either")]


def test_settings_never_echo_the_webhook_url() -> None:
    settings = SlackSettings(webhook_url=HOOK)  # type: ignore[arg-type]
    assert "XXXXSECRET" not in repr(settings)
    with pytest.raises(ValidationError) as info:
        SlackSettings(webhook_url="hooks.slack.com/services/T/B/SECRETVALUE")  # type: ignore[arg-type]
    assert "SECRETVALUE" not in str(info.value).split("input_value")[0]
    with pytest.raises(ValidationError, match="extra"):
        SlackSettings.model_validate({"webhook_url": HOOK, "channel": "#sales"})


async def test_posts_the_card(router: respx.MockRouter, make_connector: Any) -> None:
    route = router.post(HOOK).respond(200, text="ok")
    connector = make_connector()
    await connector.startup()
    result = await connector.send(CARD, ctx())
    await connector.close()
    assert result.status_code == 200 and result.remote_id is None
    body = json.loads(route.calls.last.request.content)
    assert body["blocks"][0]["text"]["text"] == "John Doe"
    assert route.calls.last.request.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("status", "body", "headers", "error", "message"),
    [
        (429, "rate_limited", {"Retry-After": "7"}, RateLimited, "HTTP 429"),
        (400, "invalid_payload", {}, PermanentError, "invalid_payload"),
        (400, "no_text", {}, PermanentError, "no_text"),
        (403, "invalid_token", {}, PermanentError, "refused the webhook URL"),
        (404, "no_service", {}, PermanentError, "webhook is gone"),
        (410, "channel_is_archived", {}, PermanentError, "webhook is gone"),
        (413, "", {}, PermanentError, "HTTP 413"),
        (500, "rollup_error", {}, RetryableError, "rollup_error"),
        (503, "", {}, RetryableError, "HTTP 503"),
        # An answer that is not one of Slack's error codes is never quoted.
        (400, '{"text": "New lead: John Doe"}', {}, PermanentError, "HTTP 400: Bad Request$"),
        (500, "John Doe", {}, RetryableError, "HTTP 500: Internal Server Error$"),
    ],
)
async def test_status_classification(
    router: respx.MockRouter,
    make_connector: Any,
    status: int,
    body: str,
    headers: dict[str, str],
    error: type[Exception],
    message: str,
) -> None:
    router.post(HOOK).respond(status, text=body, headers=headers)
    connector = make_connector()
    with pytest.raises(error, match=message) as info:
        await connector.send(CARD, ctx())
    await connector.close()
    assert type(info.value) is error
    assert info.value.status_code == status  # type: ignore[attr-defined]
    if status == 429:
        assert info.value.retry_after == 7.0  # type: ignore[attr-defined]
    assert "XXXXSECRET" not in str(info.value)


@pytest.mark.parametrize(
    "exc",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("x")],
)
async def test_transport_errors_are_retryable(
    router: respx.MockRouter, make_connector: Any, exc: Exception
) -> None:
    router.post(HOOK).mock(side_effect=exc)
    connector = make_connector()
    with pytest.raises(RetryableError):
        await connector.send(CARD, ctx())
    await connector.close()


async def test_contract(router: respx.MockRouter) -> None:
    route = router.post(HOOK)
    await check_connector(
        SlackConnector,
        {"webhook_url": HOOK},
        CARD,
        scenarios=[
            Scenario("ok", lambda: route.respond(200, text="ok")),
            Scenario("limited", lambda: route.respond(429), expect=RateLimited),
            Scenario("gone", lambda: route.respond(410), expect=PermanentError),
            Scenario("down", lambda: route.respond(502), expect=RetryableError),
            Scenario(
                "unreachable",
                lambda: route.mock(side_effect=httpx.ConnectError("x")),
                expect=RetryableError,
            ),
        ],
        accepted_fields=list(CARD),
        rejected_fields=["first_name"],
    )


async def test_real_transport_against_a_local_server(make_connector: Any) -> None:
    with FakeHTTP() as server:
        server.queue(
            Answer(200, b"ok"),
            Answer(429, b"rate_limited", {"Retry-After": "3"}),
            Answer(410, b"channel_is_archived"),
        )
        connector = make_connector(server.url + "/services/T/B/X", timeout=30, allow_private=True)
        await connector.startup()
        try:
            assert (await connector.send(CARD, ctx())).status_code == 200
            with pytest.raises(RateLimited) as limited:
                await connector.send(CARD, ctx())
            assert limited.value.retry_after == 3.0
            with pytest.raises(PermanentError, match="gone"):
                await connector.send(CARD, ctx())
        finally:
            await connector.close()
        assert server.requests[0].path == "/services/T/B/X"
        assert server.requests[0].headers["user-agent"] == f"lead-bridge/{__version__}"
        assert server.requests[0].json()["blocks"][0]["text"]["text"] == "John Doe"


async def test_real_transport_timeout_and_refused_connection(make_connector: Any) -> None:
    with FakeHTTP() as server:
        server.queue(Answer(200, b"ok", delay=5))
        connector = make_connector(server.url + "/hook", timeout=0.2, allow_private=True)
        try:
            with pytest.raises(RetryableError, match="timed out"):
                await connector.send(CARD, ctx())
        finally:
            await connector.close()
        closed_port = server.url
    connector = make_connector(closed_port + "/hook", timeout=1, allow_private=True)
    try:
        with pytest.raises(RetryableError, match="connection failed"):
            await connector.send(CARD, ctx())
    finally:
        await connector.close()
