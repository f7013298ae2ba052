"""Generic webhook: send the record as JSON to any HTTP endpoint.

Requests are signed per the Standard Webhooks spec
(https://www.standardwebhooks.com/) when ``secret`` is set:

* ``webhook-id``         stable per lead and destination: the receiver's idempotency key;
* ``webhook-timestamp``  integer UNIX seconds of this attempt;
* ``webhook-signature``  ``v1,`` + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}")),
                         key = the base64-decoded part of ``whsec_<base64>``.

Outbound safety: only http/https, redirects are never followed, and only
globally routable addresses are connected to unless the destination sets
``allow_private: true`` (checked at connect time, see :mod:`connectors._http`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver
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

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format prefix, not a secret
# Headers the connector owns; a configured header must not replace them.
_RESERVED = {"webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "host"}
_TOKEN_CHARS = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; ValueError names the problem."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("expected a Standard Webhooks secret 'whsec_<base64>'")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the part after 'whsec_' is not valid base64") from None
    if len(key) < 16:
        raise ValueError("the secret is too short; use at least 16 random bytes (24 is common)")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


class WebhookSettings(ConnectorSettings):
    url: str
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    # Values are ${VAR}-expanded when the config loads.
    headers: dict[str, str] = {}
    secret: SecretStr | None = None
    timeout: Duration = Field(10.0, gt=0, le=300)  # seconds, or '10s'
    # Allow destinations on loopback/private/shared/reserved networks (tests,
    # sidecars, intranets); by default only globally routable addresses.
    allow_private: bool = False

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"expected an http:// or https:// URL, got scheme {parts.scheme!r}")
        if not parts.hostname:
            raise ValueError("the URL has no host")
        if parts.username or parts.password:
            raise ValueError("credentials in the URL are not allowed; use headers")
        return value

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, header_value in value.items():
            if not name or not set(name) <= _TOKEN_CHARS:
                raise ValueError(f"{name!r} is not a valid header name")
            if name.lower() in _RESERVED:
                raise ValueError(f"header {name!r} is set by the connector; remove it")
            if "\r" in header_value or "\n" in header_value:
                raise ValueError(f"the value of header {name!r} contains a line break")
        return value

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            decode_secret(value.get_secret_value())
        return value


def _classify(status: int, retry_after: str | None) -> DeliveryError | None:
    """The one place that reads the receiver's answer.

    2xx success; 410 permanent (endpoint gone); 408, 429, 5xx retryable; other
    4xx permanent. Neither the body nor the receiver's reason phrase is quoted
    (a receiver may echo our payload): the status and its standard phrase only.
    """
    return _http.classify_status(status, _http.reason(status), retry_after)


def _encode(record: Mapping[str, Any]) -> bytes:
    try:
        return orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # orjson.JSONEncodeError; e.g. an integer beyond 64 bits
        pass
    # The standard library encodes what orjson refuses but JSON allows.
    try:
        return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise PermanentError(f"the record cannot be encoded as JSON: {exc}") from exc


def _remote_id(content_type: str, body: bytes) -> str | None:
    if "json" not in content_type:
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if isinstance(data, dict) and isinstance(data.get("id"), str | int):
        return str(data["id"])
    return None


def _where(url: str) -> str:
    """The URL without its query (which may carry a token), for messages."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class WebhookConnector(Connector):
    """One aiohttp session per destination.

    Raw aiohttp rather than httpx: on this hot path (one POST per lead, a few
    thousand a second) httpx's request/response models cost more CPU than the
    HTTP exchange itself; see :mod:`connectors._http` for the measurements.
    """

    type_name = "webhook"
    Settings = WebhookSettings
    flow_defaults = FlowDefaults(concurrency=32)
    settings: WebhookSettings

    def __init__(
        self,
        name: str,
        settings: ConnectorSettings,
        *,
        # flow.concurrency's upper bound: the engine's per-destination limit is the
        # one that binds, so requests never wait in the pool for a connection.
        max_connections: int = 1000,
        # Tests inject a resolver; by default the system's (getaddrinfo).
        resolver: AbstractResolver | None = None,
    ) -> None:
        super().__init__(name, settings)
        self._max_connections = max_connections
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None
        self._key = (
            decode_secret(self.settings.secret.get_secret_value())
            if self.settings.secret is not None
            else None
        )
        self._headers = {"content-type": "application/json", **self.settings.headers}

    async def startup(self) -> None:
        if self._session is None:
            if self.settings.secret is not None:
                register_secret(self.settings.secret.get_secret_value())
            self._session = _http.make_session(
                timeout=self.settings.timeout,
                max_connections=self._max_connections,
                allow_private=self.settings.allow_private,
                resolver=self._resolver,
            )

    async def send(self, record: Mapping[str, Any], context: DeliveryContext) -> DeliveryResult:
        body = _encode(record)
        # Unsigned receivers get the idempotency key too.
        headers = {**self._headers, "webhook-id": context.idempotency_key}
        if self._key is not None:
            timestamp = int(time.time())
            headers["webhook-timestamp"] = str(timestamp)
            headers["webhook-signature"] = sign(self._key, context.idempotency_key, timestamp, body)
        if self._session is None:
            await self.startup()
        assert self._session is not None
        try:
            async with self._session.request(
                self.settings.method,
                self.settings.url,
                data=body,
                headers=headers,
                allow_redirects=False,  # a 3xx is an answer, not a hop
            ) as response:
                answer = await response.read()
                status = response.status
                error = _classify(status, response.headers.get("Retry-After"))
                content_type = response.headers.get("Content-Type", "")
        except _http.TRANSPORT_ERRORS as exc:
            raise _http.classify_transport_error(exc, "webhook") from exc
        if error is not None:
            raise error
        return DeliveryResult(remote_id=_remote_id(content_type, answer), status_code=status)

    async def check(self) -> CheckResult:
        """A HEAD request with the configured headers: any HTTP answer proves
        the receiver is reachable; no lead is sent and nothing is signed."""
        where = _where(self.settings.url)
        await self.startup()  # the session's connector guards the address

        assert self._session is not None
        try:
            async with self._session.head(
                self.settings.url, headers=self.settings.headers, allow_redirects=False
            ) as response:
                status, reason = response.status, _http.reason(response.status)
        except _http.TRANSPORT_ERRORS as exc:
            raise _http.classify_transport_error(exc, "webhook") from exc
        answer = f"HTTP {status} {reason}".strip()
        if status in (404, 410):
            return CheckResult(False, f"{where} answered {answer}: check the URL", status)
        if status >= 500 and status != 501:
            return CheckResult(False, f"{where} answered {answer}: the receiver fails", status)
        if status in (401, 403):
            return CheckResult(
                False, f"{where} answered {answer}: check the destination's headers", status
            )
        return CheckResult(True, f"{where} is reachable ({answer} to HEAD; no lead sent)", status)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
