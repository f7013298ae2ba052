"""Example custom connector: post a lead card to a Microsoft Teams channel.

Teams "Workflows" incoming webhooks accept an Adaptive Card wrapped in a message
and answer ``202 Accepted``. Use it from YAML without packaging anything:

    plugins:
      paths: [/etc/lead-bridge/plugins]     # the directory holding this file
    destinations:
      - name: teams-sales
        type: "teams:TeamsConnector"
        settings:
          webhook_url: ${TEAMS_WEBHOOK_URL}

The whole connector contract is here: a settings model, ``send`` (one record, one
request), ``startup``/``close`` for the client, and ``classify`` as the one
place that turns Teams' statuses into Lead Bridge errors (``_transport_error``
handles the client's exceptions).

The client comes from ``connectors._http.make_client``, the built-ins' HTTP seam:
the httpx API over their transport, which connects only to globally routable
addresses (checked on the address actually connected to) and never follows
redirects; ``allow_private: true`` opts out, for a URL on the intranet.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
from pydantic import Field, SecretStr

from bridge.errors import (
    DeliveryError,
    PermanentError,
    RetryableError,
    error_for_status,
    parse_retry_after,
)
from connectors import _http
from connectors.base import (
    Connector,
    ConnectorSettings,
    DeliveryContext,
    DeliveryResult,
    FlowDefaults,
)

FIELDS = ("title", "company", "email", "phone", "position", "form_url", "lead_id")


class TeamsSettings(ConnectorSettings):
    webhook_url: SecretStr  # the URL is the credential
    timeout: float = Field(10.0, gt=0)
    # Allow a URL on loopback/private networks; by default only public addresses.
    allow_private: bool = False


def build_card(record: Mapping[str, Any]) -> dict[str, Any]:
    facts = [
        {"title": label, "value": str(record[key])}
        for label, key in (
            ("Company", "company"),
            ("Email", "email"),
            ("Phone", "phone"),
            ("Position", "position"),
            ("Lead", "lead_id"),
        )
        if record.get(key)
    ]
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": str(record.get("title") or "New lead"),
                "size": "Large",
                "weight": "Bolder",
                "wrap": True,
            },
            {"type": "FactSet", "facts": facts},
        ],
    }
    if record.get("form_url"):
        card["actions"] = [
            {"type": "Action.OpenUrl", "title": "Open form", "url": str(record["form_url"])}
        ]
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}
        ],
    }


def classify(response: httpx.Response) -> DeliveryError | None:
    """The one place that reads Teams' answer: 2xx success, 429 rate limited,
    408/5xx retryable, 401/403 credentials, other 4xx permanent."""
    return error_for_status(
        response.status_code,
        response.reason_phrase,
        retry_after=parse_retry_after(response.headers.get("retry-after")),
    )


def _transport_error(exc: BaseException) -> DeliveryError:
    # An address the guard refused is a configuration problem: permanent. Timeouts
    # and connection failures: the engine retries later. The message names the
    # exception type only: never the URL, which is the credential.
    refused = _http.address_refused(exc)
    if refused is not None:
        return PermanentError(f"Teams {refused}")
    return RetryableError(f"Teams request failed ({type(exc).__name__})")


class TeamsConnector(Connector):
    type_name = "teams"
    Settings = TeamsSettings
    # Teams throttles webhooks at a few messages per second.
    flow_defaults = FlowDefaults(concurrency=1, rate_per_second=2, burst=2)
    # Used when a destination has no `mapping:` (Lead Bridge's mapping rule syntax).
    default_mapping = {
        "title": {
            "template": "{data.first_name} {data.last_name}",
            "transform": ["collapse_spaces"],
            "default": "New lead",
        },
        "company": "data.organization_name",
        "email": "data.email",
        "phone": "data.phone",
        "position": "data.position",
        "form_url": "url",
        "lead_id": "id",
    }
    settings: TeamsSettings

    def __init__(self, name: str, settings: ConnectorSettings) -> None:
        super().__init__(name, settings)
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def check_fields(cls, settings: ConnectorSettings, fields: list[str]) -> list[tuple[str, str]]:
        return [
            (name, f"not a Teams card field; accepted: {', '.join(FIELDS)}")
            for name in fields
            if name not in FIELDS
        ]

    async def startup(self) -> None:
        if self._client is None:
            self._client = _http.make_client(
                timeout=self.settings.timeout,
                max_connections=2,
                allow_private=self.settings.allow_private,
            )

    async def send(self, record: Mapping[str, Any], context: DeliveryContext) -> DeliveryResult:
        await self.startup()
        assert self._client is not None
        try:
            response = await self._client.post(
                self.settings.webhook_url.get_secret_value(), json=build_card(record)
            )
        except _http.TRANSPORT_ERRORS as exc:
            raise _transport_error(exc) from exc
        error = classify(response)
        if error is not None:
            raise error
        return DeliveryResult(status_code=response.status_code)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
