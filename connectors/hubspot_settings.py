"""The settings of a HubSpot destination, checked when the config loads (no SDK import)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from bridge.durations import Duration
from connectors.base import ConnectorSettings

PROPERTY_RE = re.compile(r"^[a-z][a-z0-9_]*$")
PROPERTY_HINT = "lowercase letters, digits and underscores, starting with a letter"


class HubSpotSettings(ConnectorSettings):
    # A private app's access token (Settings > Integrations > Private apps).
    access_token: SecretStr
    # The unique property that finds the contact: email, or a custom unique
    # property holding the lead id.
    id_property: str = "email"
    host: str = "https://api.hubapi.com"
    timeout: Duration = Field(30.0, gt=0)
    # PEM bundle that verifies HubSpot (or a TLS-intercepting proxy); None: system CAs.
    ca_bundle: Path | None = None
    # Allow a host on loopback/private networks (a proxy on the intranet, tests);
    # by default only globally routable addresses.
    allow_private: bool = False

    @field_validator("access_token")
    @classmethod
    def _token(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("the private app access token is empty")
        return value

    @field_validator("id_property")
    @classmethod
    def _id_property(cls, value: str) -> str:
        if not PROPERTY_RE.match(value):
            raise ValueError(f"{value!r} is not a HubSpot property internal name ({PROPERTY_HINT})")
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("expected a base URL such as https://api.hubapi.com")
        return value.rstrip("/")

    @field_validator("ca_bundle")
    @classmethod
    def _ca_bundle(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"CA bundle file {value} does not exist")
        return value
