"""The settings of a Salesforce destination, checked when the config loads.

Importing this module loads neither simple-salesforce nor requests: config
checks (`check-config`, `map`) and a service's start-up only validate.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    FilePath,
    SecretStr,
    field_validator,
    model_validator,
)

from bridge.durations import Duration
from connectors.base import ConnectorSettings

# Letters, digits and single underscores, starting with a letter; "__" only before a
# suffix (``__c``) or after a namespace prefix (``ns__Field__c``).
_API_NAME_RE = re.compile(
    r"^[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*(?:__[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*){0,2}$"
)
_RULE_ID_RE = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")
_API_VERSION_RE = re.compile(r"^\d{2,3}\.0$")


AuthMode = Literal["client_credentials", "jwt", "password", "token"]

_NEEDS: dict[str, tuple[str, ...]] = {
    "client_credentials": ("client_id", "client_secret"),
    "jwt": ("client_id", "username", "private_key_file"),
    "password": ("client_id", "client_secret", "username", "password"),
    "token": ("access_token",),
}


def is_api_name(name: str) -> bool:
    return len(name) <= 80 and _API_NAME_RE.match(name) is not None


def _https_url(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"expected an https:// URL such as {what}")
    if parts.query or parts.fragment:
        raise ValueError("expected a URL without '?' or '#'")
    return value.rstrip("/")


class AuthSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: AuthMode
    client_id: str | None = None
    client_secret: SecretStr | None = None
    username: str | None = None
    private_key_file: FilePath | None = None
    password: SecretStr | None = None
    # Not needed when the server's IP range is trusted by the org.
    security_token: SecretStr | None = None
    access_token: SecretStr | None = None

    @model_validator(mode="after")
    def _complete(self) -> AuthSettings:
        missing = []
        for key in _NEEDS[self.mode]:
            value = getattr(self, key)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if value is None or value == "":
                missing.append(key)
        if missing:
            raise ValueError(
                f"mode {self.mode!r} needs {', '.join(_NEEDS[self.mode])}; "
                f"missing or empty: {', '.join(missing)}"
            )
        return self


class Settings(ConnectorSettings):
    auth: AuthSettings
    # The token endpoint base: login.salesforce.com, test.salesforce.com (sandboxes)
    # or a My Domain URL (required by the client credentials flow).
    login_url: str = "https://login.salesforce.com"
    # None: the instance_url the token endpoint returns. Required for mode token.
    instance_url: str | None = None
    api_version: str = "62.0"
    sobject: str = "Lead"
    # None: plain create, which is NOT safe against retries (a timeout after
    # Salesforce committed creates a duplicate on the next attempt).
    external_id_field: str | None = None
    # None: no header (Salesforce's default); true/false or an AssignmentRule id.
    assignment_rule: bool | str | None = None
    allow_duplicates: bool = False
    timeout: Duration = 30.0
    ca_bundle: FilePath | None = None
    # Allow login_url/instance_url on loopback/private networks (a proxy on the
    # intranet, tests); by default only globally routable addresses.
    allow_private: bool = False

    @field_validator("login_url")
    @classmethod
    def _login_url(cls, value: str) -> str:
        return _https_url(
            value, "https://login.salesforce.com or https://mydomain.my.salesforce.com"
        )

    @field_validator("instance_url")
    @classmethod
    def _instance_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = _https_url(value, "https://mydomain.my.salesforce.com")
        if urlsplit(value).path not in ("", "/"):
            # simple-salesforce keeps only host[:port] of the instance URL
            raise ValueError(
                "expected scheme and host only (no path), e.g. https://mydomain.my.salesforce.com"
            )
        return value

    @field_validator("api_version", mode="before")
    @classmethod
    def _api_version(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = f"{float(value):.1f}"  # YAML reads 62.0 as a number
        if isinstance(value, str):
            value = value.removeprefix("v")
            if _API_VERSION_RE.match(value):
                return value
        raise ValueError("expected an API version such as '62.0'")

    @field_validator("sobject", "external_id_field")
    @classmethod
    def _api_name(cls, value: str | None) -> str | None:
        if value is not None and not is_api_name(value):
            raise ValueError(
                f"{value!r} is not a Salesforce API name (letters, digits and underscores, "
                "e.g. Lead or Lead_Bridge_Id__c)"
            )
        return value

    @field_validator("assignment_rule", mode="before")
    @classmethod
    def _assignment_rule(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"  # "${AUTO_ASSIGN}" arrives as a string
        if isinstance(value, str) and not _RULE_ID_RE.match(value):
            raise ValueError("expected true, false or a 15/18-character AssignmentRule id")
        return value

    @field_validator("timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("expected a positive duration such as 30 or '30s'")
        return value

    @model_validator(mode="after")
    def _token_needs_instance(self) -> Settings:
        if self.auth.mode == "token" and self.instance_url is None:
            raise ValueError("instance_url is required with auth.mode 'token'")
        return self

    def session_headers(self) -> dict[str, str]:
        """Headers sent with every sObject call; they live on the requests session."""
        headers = {}
        if isinstance(self.assignment_rule, bool):
            headers["Sforce-Auto-Assign"] = "TRUE" if self.assignment_rule else "FALSE"
        elif self.assignment_rule is not None:
            headers["Sforce-Auto-Assign"] = self.assignment_rule
        if self.allow_duplicates:
            headers["Sforce-Duplicate-Rule-Header"] = "allowSave=true"
        return headers
