"""Slack: post a readable lead card to an incoming-webhook URL.

The record comes from the mapping. Card fields (the default Slack mapping fills
them): ``title`` (the person's name), ``company``, ``email``, ``phone``,
``position``, ``location``, ``company_size``, ``form_url``, ``lead_id``,
``created``. To take over the layout, map ``blocks`` (a Block Kit list, sent
as-is) and/or ``text``; ``text`` alone sends a plain message, ``text`` with card
fields replaces the notification fallback.

Answers of incoming webhooks (https://api.slack.com/messaging/webhooks):
``200 ok``; ``400 invalid_payload`` and friends; ``403 invalid_token`` /
``action_prohibited``; ``404 no_service`` and ``410 channel_is_archived`` when
the webhook is gone; ``429`` with ``Retry-After``; ``5xx``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import httpx
from pydantic import Field, SecretStr, field_validator

from bridge.durations import Duration
from bridge.errors import DeliveryError, PermanentError
from bridge.logs import register_secret
from connectors import _http
from connectors.base import (
    CheckResult,
    Connector,
    ConnectorSettings,
    DeliveryContext,
    DeliveryResult,
    FlowDefaults,
)

if TYPE_CHECKING:  # aiohttp loads with the transport's first session
    from aiohttp.abc import AbstractResolver

CARD_FIELDS = (
    "title",
    "company",
    "email",
    "phone",
    "position",
    "location",
    "company_size",
    "form_url",
    "lead_id",
    "created",
)
OVERRIDE_FIELDS = ("text", "blocks")

# Block Kit limits: header text 150 chars, section field 2000, 10 fields per section.
_HEADER_MAX = 150
_FIELD_MAX = 2000
_GONE = {404, 410}
# An incoming webhook's path: /services/<team>/<bot>/<secret>.
_HOOK_PATH = re.compile(r"^/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]+/?$")
# The error codes incoming webhooks answer with (api.slack.com/messaging/webhooks).
# Only these are quoted in errors: any other answer body may echo the message.
ERROR_CODES = frozenset(
    {
        "action_prohibited",
        "channel_is_archived",
        "channel_not_found",
        "invalid_attachments",
        "invalid_blocks",
        "invalid_blocks_format",
        "invalid_payload",
        "invalid_token",
        "missing_text_or_fallback_or_attachments",
        "no_active_hooks",
        "no_service",
        "no_service_id",
        "no_team",
        "no_text",
        "posting_to_general_channel_denied",
        "rate_limited",
        "rollup_error",
        "team_disabled",
        "too_many_attachments",
        "user_not_found",
    }
)


class SlackSettings(ConnectorSettings):
    # The URL itself is the credential: anyone holding it can post to the channel.
    webhook_url: SecretStr
    timeout: Duration = Field(10.0, gt=0, le=120)  # seconds, or '10s'
    # Allow a URL on loopback/private networks (a Slack-compatible chat server
    # on the intranet, tests); by default only globally routable addresses.
    allow_private: bool = False

    @field_validator("webhook_url")
    @classmethod
    def _https(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        if not url.startswith(("https://", "http://")):
            # Never echo the URL: it is a secret.
            raise ValueError(
                "expected the incoming-webhook URL (https://hooks.slack.com/services/...)"
            )
        return value


def escape(text: str) -> str:
    """Slack's three control characters; user text must not form links or mentions."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _str(record: Mapping[str, Any], key: str) -> str:
    value = record.get(key)
    if value is None:
        return ""
    return str(value).strip()


def build_card(record: Mapping[str, Any], received_at: float | None = None) -> dict[str, Any]:
    """The Block Kit message for the card fields (absent fields are left out)."""
    title = _str(record, "title") or "New lead"
    fields: list[tuple[str, str]] = []
    for label, key in (
        ("Company", "company"),
        ("Position", "position"),
        ("Phone", "phone"),
        ("Location", "location"),
        ("Company size", "company_size"),
    ):
        value = _str(record, key)
        if value:
            fields.append((label, escape(value)))
    email = _str(record, "email")
    if email:
        # mailto link; '|' would end the URL part, so it cannot be in a valid address anyway
        safe = escape(email).replace("|", "")
        fields.insert(1, ("Email", f"<mailto:{safe}|{safe}>"))
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(title, _HEADER_MAX)}}
    ]
    if fields:
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": _clip(f"*{label}*\n{value}", _FIELD_MAX)}
                    for label, value in fields[:10]
                ],
            }
        )
    form_url = _str(record, "form_url")
    if form_url:
        url = escape(form_url).replace("|", "%7C")
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _clip(f"*Form*\n<{url}>", _FIELD_MAX)},
            }
        )
    context = [
        part
        for part in (
            f"Lead `{escape(_str(record, 'lead_id'))}`" if _str(record, "lead_id") else "",
            f"submitted {escape(_str(record, 'created'))}" if _str(record, "created") else "",
            f"received {_utc(received_at)}" if received_at else "",
        )
        if part
    ]
    if context:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(context)}]}
        )
    company = _str(record, "company")
    fallback = f"New lead: {title}" + (f" ({company})" if company else "")
    text = _str(record, "text") or fallback
    return {"text": escape(text), "blocks": blocks}


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def build_message(record: Mapping[str, Any], received_at: float | None = None) -> dict[str, Any]:
    """The JSON body for one record: the override as-is, else the card."""
    blocks = record.get("blocks")
    if blocks is not None:
        if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
            raise PermanentError("mapped 'blocks' must be a list of Block Kit objects")
        text = record.get("text")
        return {"text": str(text) if text is not None else "New lead", "blocks": blocks}
    if not any(_str(record, key) for key in CARD_FIELDS):
        text = record.get("text")
        if text is None or not str(text).strip():
            raise PermanentError(
                "nothing to post: the record has no card fields, 'text' or 'blocks'"
            )
        # A mapped text is the user's own template: sent as-is, like blocks.
        return {"text": str(text)}
    return build_card(record, received_at)


def error_code(response: httpx.Response) -> str:
    """Slack's error code when the body is one, else the standard reason phrase."""
    body = response.content.strip()
    if len(body) <= 64:
        text = body.decode("ascii", "replace")
        if text in ERROR_CODES:
            return text
    return _http.reason(response.status_code)


def _classify(response: httpx.Response) -> DeliveryError | None:
    """The one place that reads Slack's answer; only known error codes are quoted."""
    if response.is_success:
        return None
    code = error_code(response)
    if response.status_code in _GONE:
        return PermanentError(
            f"HTTP {response.status_code}: {code}: the Slack webhook is gone "
            "(app removed or channel archived); create a new incoming webhook "
            "and update settings.webhook_url",
            status_code=response.status_code,
        )
    if response.status_code in (401, 403):
        # No credentials to refresh: the URL itself was refused.
        return PermanentError(
            f"HTTP {response.status_code}: {code}: Slack refused the webhook URL; "
            "check settings.webhook_url",
            status_code=response.status_code,
        )
    return _http.status_error(response, code)


class SlackConnector(Connector):
    type_name = "slack"
    Settings = SlackSettings
    # Slack allows about one message per second per incoming webhook.
    flow_defaults = FlowDefaults(
        concurrency=1, rate_per_second=1, burst=1, documented_limit=(1, 1.0)
    )
    settings: SlackSettings

    accepted_fields: ClassVar[tuple[str, ...]] = CARD_FIELDS + OVERRIDE_FIELDS

    def __init__(
        self,
        name: str,
        settings: ConnectorSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        super().__init__(name, settings)
        self._transport = transport
        self._resolver = resolver
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def check_fields(cls, settings: ConnectorSettings, fields: list[str]) -> list[tuple[str, str]]:
        accepted = ", ".join(cls.accepted_fields)
        problems = [
            (name, f"not a Slack message field; accepted: {accepted}")
            for name in fields
            if name not in cls.accepted_fields
        ]
        if "blocks" in fields:
            mixed = [name for name in fields if name in CARD_FIELDS]
            problems.extend(
                (name, "card fields cannot be combined with 'blocks'; map either") for name in mixed
            )
        return problems

    async def startup(self) -> None:
        if self._client is None:
            register_secret(self.settings.webhook_url.get_secret_value())
            self._client = _http.make_client(
                timeout=self.settings.timeout,
                max_connections=4,
                allow_private=self.settings.allow_private,
                transport=self._transport,
                resolver=self._resolver,
            )

    async def send(self, record: Mapping[str, Any], context: DeliveryContext) -> DeliveryResult:
        message = build_message(record, context.received_at or None)
        if self._client is None:
            await self.startup()
        assert self._client is not None
        try:
            response = await self._client.post(
                self.settings.webhook_url.get_secret_value(), json=message
            )
            await response.aread()
        except _http.TRANSPORT_ERRORS as exc:
            raise _http.classify_transport_error(exc, "Slack") from exc
        error = _classify(response)
        if error is not None:
            raise error
        return DeliveryResult(status_code=response.status_code)

    async def check(self) -> CheckResult:
        """The URL's form, then a GET (Slack answers it without posting): a
        revoked webhook answers 404/410, a live one an error about the method.
        Only a real post proves the channel; use "send a test lead" for that."""
        url = self.settings.webhook_url.get_secret_value()
        parts = urlsplit(url)
        host = parts.hostname or ""
        if host == "hooks.slack.com" and not _HOOK_PATH.match(parts.path):
            return CheckResult(
                False,
                "settings.webhook_url does not look like an incoming webhook "
                "(https://hooks.slack.com/services/T…/B…/…)",
            )
        await self.startup()
        assert self._client is not None
        try:
            response = await self._client.get(url)
            await response.aread()
        except _http.TRANSPORT_ERRORS as exc:
            raise _http.classify_transport_error(exc, "Slack") from exc
        status = response.status_code
        if status in (403, *_GONE):
            return CheckResult(
                False,
                f"{host} answered HTTP {status}: the webhook is unknown, revoked or refused; "
                "create a new one and update settings.webhook_url",
                status,
            )
        if status >= 500:
            return CheckResult(False, f"{host} answered HTTP {status}: Slack fails", status)
        return CheckResult(
            True, f"{host} is reachable (HTTP {status} to GET; nothing posted)", status
        )

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
