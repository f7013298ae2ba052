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
import hmac
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import orjson
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
    digest = hmac.digest(key, signed, "sha256")  # one-shot: OpenSSL's fast path
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


def _remote_id(answer: _http.Answer) -> str | None:
    """The ``id`` of a JSON object answer, if the receiver sent one."""
    body = answer.content
    if not body or "json" not in answer.headers.get("Content-Type", ""):
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
    """One transport (:class:`connectors._http.Transport`) per destination.

    Each lead is one :meth:`~connectors._http.Transport.exchange`: the seam's lean
    path, without httpx's request and response models (see :mod:`connectors._http`).
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
        self._transport: _http.Transport | None = None
        self._key = (
            decode_secret(self.settings.secret.get_secret_value())
            if self.settings.secret is not None
            else None
        )
        self._headers = {"content-type": "application/json", **self.settings.headers}

    async def startup(self) -> None:
        if self._transport is None:
            if self.settings.secret is not None:
                register_secret(self.settings.secret.get_secret_value())
            self._transport = _http.Transport(
                timeout=self.settings.timeout,
                max_connections=self._max_connections,
                allow_private=self.settings.allow_private,
                resolver=self._resolver,
            )

    async def _exchange(self, method: str, body: bytes, headers: dict[str, str]) -> _http.Answer:
        if self._transport is None:
            await self.startup()
        assert self._transport is not None
        try:
            return await self._transport.exchange(method, self.settings.url, body, headers)
        except _http.TRANSPORT_ERRORS as exc:
            raise _http.classify_transport_error(exc, "webhook") from exc

    async def send(self, record: Mapping[str, Any], context: DeliveryContext) -> DeliveryResult:
        body = _encode(record)
        # Unsigned receivers get the idempotency key too.
        headers = {**self._headers, "webhook-id": context.idempotency_key}
        if self._key is not None:
            timestamp = int(time.time())
            headers["webhook-timestamp"] = str(timestamp)
            headers["webhook-signature"] = sign(self._key, context.idempotency_key, timestamp, body)
        answer = await self._exchange(self.settings.method, body, headers)
        status = answer.status
        if not 200 <= status < 300:
            error = _classify(status, answer.headers.get("Retry-After"))
            if error is not None:
                raise error
        return DeliveryResult(remote_id=_remote_id(answer), status_code=status)

    async def check(self) -> CheckResult:
        """A HEAD request with the configured headers: any HTTP answer proves
        the receiver is reachable; no lead is sent and nothing is signed."""
        where = _where(self.settings.url)
        # The transport's connector guards the address.
        head = await self._exchange("HEAD", b"", dict(self.settings.headers))
        status, reason = head.status, _http.reason(head.status)
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
        transport, self._transport = self._transport, None
        if transport is not None:
            await transport.aclose()
