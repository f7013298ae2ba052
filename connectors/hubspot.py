"""HubSpot: create or update one contact per lead (hubspot-api-client).

Every delivery is a batch upsert, so a retried delivery updates the contact the
first attempt created instead of making a duplicate. A lone lead is an upsert of
one input; when the engine has a backlog it sends up to 100 leads per call
(:meth:`HubSpotConnector.send_batch`) and splits the answer (200, or 207 with
per-input errors) back to each lead. The contact is
found by ``id_property``: ``email`` (the default) or a unique custom property
that holds the lead id (set automatically unless the mapping fills it).

The SDK is blocking (urllib3): calls run on the connector's own threads with an
explicit timeout (:class:`connectors._blocking.BlockingConnector`); urllib3's own
retries are off because the delivery engine owns retries. ``hubspot`` is
imported only when a HubSpot destination starts.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, SecretStr, field_validator

from bridge import USER_AGENT
from bridge.durations import Duration
from bridge.errors import (
    AuthError,
    ConfigError,
    DeliveryError,
    PermanentError,
    RateLimited,
    RetryableError,
    error_for_status,
    parse_retry_after,
)
from bridge.logs import redact, register_secret
from connectors import _http
from connectors._blocking import BlockingConnector
from connectors.base import (
    ApiUsage,
    CheckResult,
    ConnectorSettings,
    DeliveryContext,
    DeliveryResult,
    FlowDefaults,
)

if TYPE_CHECKING:
    from hubspot.crm.contacts import BatchApi

# HubSpot's token introspection for private apps: the scopes of a token.
TOKEN_INFO_PATH = "/oauth/v2/private-apps/get/access-token-info"  # noqa: S105 - a path
# What send() needs: upserting contacts.
REQUIRED_SCOPE = "crm.objects.contacts.write"

_PROPERTY_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_PROPERTY_HINT = "lowercase letters, digits and underscores, starting with a letter"

# HubSpot does not promise a Retry-After header on 429.
_RATE_LIMIT_FALLBACK = 10.0
# Error texts keep HubSpot's codes and names only; keep dead letters short.
_MAX_MESSAGE = 500
# Categories, error codes, property and scope names: what an error text may quote.
_TOKEN_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,99}$")
_EXISTING_ID = re.compile(r"Existing ID: (\d{1,20})\b")
# Context keys whose values are names, not values of the contact.
_NAMING_CONTEXT = frozenset(
    {"propertyName", "requiredScopes", "requiredGranularScopes", "missingScopes", "objectType"}
)
_INSTALL_HINT = "pip install 'lead-bridge[hubspot]'"
_POOL_SIZE = 32
# HubSpot's batch upsert takes at most 100 inputs.
MAX_BATCH = 100


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
        if not _PROPERTY_RE.match(value):
            raise ValueError(
                f"{value!r} is not a HubSpot property internal name ({_PROPERTY_HINT})"
            )
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


class HubSpotConnector(BlockingConnector["BatchApi"]):
    type_name = "hubspot"
    label = "HubSpot"
    Settings: ClassVar[type[ConnectorSettings]] = HubSpotSettings
    requirement = "hubspot-api-client"
    # Private apps may make 100 requests per 10 s (Free and Starter; more on higher
    # tiers). The bucket allows at most burst + 10 s x rate = 5 + 90 = 95 in any 10 s.
    flow_defaults = FlowDefaults(
        concurrency=10, rate_per_second=9, burst=5, documented_limit=(100, 10.0)
    )

    max_batch_size = MAX_BATCH

    settings: HubSpotSettings

    def __init__(self, name: str, settings: ConnectorSettings) -> None:
        assert isinstance(settings, HubSpotSettings)
        super().__init__(name, settings)
        self._sdk_errors: tuple[type[Exception], ...] = ()
        self._usage: ApiUsage | None = None

    def api_usage(self) -> ApiUsage | None:
        """The daily allowance as HubSpot's X-HubSpot-RateLimit-Daily* headers last said."""
        return self._usage

    @classmethod
    def check_fields(cls, settings: ConnectorSettings, fields: list[str]) -> list[tuple[str, str]]:
        problems = [
            (name, f"not a HubSpot property internal name ({_PROPERTY_HINT})")
            for name in fields
            if not _PROPERTY_RE.match(name)
        ]
        assert isinstance(settings, HubSpotSettings)
        if settings.id_property == "email" and "email" not in fields:
            problems.append(
                (
                    "email",
                    "no rule fills email, which HubSpot needs to find the contact "
                    "(id_property: email)",
                )
            )
        return problems

    @property
    def call_timeout(self) -> float:
        # The SDK's own total timeout usually fires first, with a clearer message.
        return self.settings.timeout + 1.0

    async def startup(self) -> None:
        register_secret(self.settings.access_token.get_secret_value())
        await super().startup()

    async def authenticate(self) -> BatchApi:
        # A private app token cannot be refreshed: re-authentication builds a fresh
        # client, which gives a passing 401 one more chance; a revoked token fails
        # again and the engine gives up.
        return self._build_api()

    def retire(self, creds: BatchApi) -> None:
        # Calls still running on the old client finish; its connections are not reused.
        creds.api_client.rest_client.pool_manager.clear()
        creds.api_client.close()

    @property
    def _api(self) -> BatchApi | None:
        return self._creds

    async def check(self) -> CheckResult:
        """Ask HubSpot about the access token (token-info): refused, or its
        scopes, of which sending needs crm.objects.contacts.write."""
        import ssl

        token = self.settings.access_token.get_secret_value()
        register_secret(token)
        context = None
        if self.settings.ca_bundle is not None:
            context = ssl.create_default_context(cafile=str(self.settings.ca_bundle))
        try:
            async with _http.make_client(
                timeout=self.settings.timeout,
                max_connections=1,
                allow_private=self.settings.allow_private,
                ssl_context=context,
            ) as client:
                response = await client.post(
                    self.settings.host + TOKEN_INFO_PATH, json={"tokenKey": token}
                )
        except _http.TRANSPORT_ERRORS as exc:
            refused = _http.address_refused(exc)
            if refused is not None:
                raise PermanentError(f"HubSpot {refused}") from exc
            raise RetryableError(
                f"HubSpot cannot be reached ({type(exc).__name__}: {redact(str(exc))})"
            ) from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        status = response.status_code
        if status != 200 or not isinstance(body, dict):
            message = _describe(body) if isinstance(body, dict) else ""
            return CheckResult(
                False,
                f"HubSpot refused the access token (HTTP {status}"
                + (f": {message})" if message else ")"),
                status,
            )
        scopes = sorted(str(s) for s in body.get("scopes") or [])
        if REQUIRED_SCOPE not in scopes:
            return CheckResult(
                False,
                f"the access token is valid but lacks the scope {REQUIRED_SCOPE} "
                f"(it has: {', '.join(scopes) or 'none'})",
                status,
            )
        return CheckResult(
            True,
            f"the access token is valid for HubSpot account {body.get('hubId', '?')} "
            f"with {REQUIRED_SCOPE}",
            status,
        )

    def _build_api(self) -> BatchApi:
        try:
            import hubspot
            import urllib3
            from hubspot.crm.contacts import ApiException
        except ModuleNotFoundError:
            raise ConfigError(
                f"destination {self.name!r} (type hubspot) needs hubspot-api-client: "
                f"{_INSTALL_HINT}"
            ) from None
        self._sdk_errors = (ApiException, urllib3.exceptions.HTTPError)
        options: dict[str, Any] = {
            "access_token": self.settings.access_token.get_secret_value(),
            "host": self.settings.host,
            # Retry(0): one request per call; the engine schedules retries.
            "retry": urllib3.Retry(total=0, redirect=0),
            # Room for a raised per-destination concurrency; a full pool would log
            # a warning and reconnect for every extra request.
            "connection_pool_maxsize": _POOL_SIZE,
        }
        if self.settings.ca_bundle is not None:
            options["ssl_ca_cert"] = str(self.settings.ca_bundle)
        # Each access to .crm.contacts.batch_api builds a new client and pool: keep one.
        api: BatchApi = hubspot.Client.create(**options).crm.contacts.batch_api
        api.api_client.user_agent = USER_AGENT
        _http.guard_pool_manager(
            api.api_client.rest_client.pool_manager, allow_private=self.settings.allow_private
        )
        return api

    async def send(self, record: Mapping[str, Any], context: DeliveryContext) -> DeliveryResult:
        if self._creds is None:
            raise RuntimeError(f"HubSpot destination {self.name!r} was not started")
        properties = contact_properties(record)
        id_value = self._id_value(properties, context)
        from hubspot.crm.contacts import (
            BatchInputSimplePublicObjectBatchInputUpsert,
            SimplePublicObjectBatchInputUpsert,
        )

        batch = BatchInputSimplePublicObjectBatchInputUpsert(
            inputs=[
                SimplePublicObjectBatchInputUpsert(
                    id_property=self.settings.id_property, id=id_value, properties=properties
                )
            ]
        )
        status, data = await self.call(lambda api: self._upsert(api, batch))
        return _result(status, data)

    def _upsert(self, api: BatchApi, batch: Any) -> tuple[int, bytes]:
        """One batch upsert call, on the pool's thread (reading the body blocks too)."""
        try:
            # Unparsed answer: the SDK's models drop 201 bodies and hide the status.
            response = api.upsert_with_http_info(
                batch, _request_timeout=self.settings.timeout, _preload_content=False
            )
        except self._sdk_errors as exc:
            self._note_usage(getattr(exc, "headers", None))
            raise classify(exc) from exc
        self._note_usage(response.headers)
        return response.status, _read(response)

    def _note_usage(self, headers: Mapping[str, str] | None) -> None:
        usage = daily_usage(headers or {})
        if usage is not None:
            self._usage = usage

    async def send_batch(
        self, items: Sequence[tuple[Mapping[str, Any], DeliveryContext]]
    ) -> list[DeliveryResult | DeliveryError]:
        """Up to 100 leads in one batch upsert; the answer split back per lead.

        HubSpot refuses a batch that names one contact twice, so leads for the
        same contact go in consecutive calls (the later lead's values win, as they
        would one by one). A lead HubSpot's answer does not account for is sent
        once more on its own: an upsert, so that is harmless.
        """
        if self._creds is None:
            raise RuntimeError(f"HubSpot destination {self.name!r} was not started")
        from hubspot.crm.contacts import (
            BatchInputSimplePublicObjectBatchInputUpsert,
            SimplePublicObjectBatchInputUpsert,
        )

        id_property = self.settings.id_property
        results: list[DeliveryResult | DeliveryError | None] = [None] * len(items)
        rounds: list[dict[str, tuple[int, str, dict[str, str]]]] = []
        for index, (record, context) in enumerate(items):
            try:
                properties = contact_properties(record)
                id_value = self._id_value(properties, context)
                key = _contact_key(id_property, id_value)
            except PermanentError as exc:
                results[index] = exc
                continue
            target = next((r for r in rounds if key not in r), None)
            if target is None:
                target = {}
                rounds.append(target)
            target[key] = (index, id_value, properties)

        def upsert_all(api: BatchApi) -> None:
            for inputs in rounds:
                batch = BatchInputSimplePublicObjectBatchInputUpsert(
                    inputs=[
                        SimplePublicObjectBatchInputUpsert(
                            id_property=id_property, id=id_value, properties=props
                        )
                        for _, id_value, props in inputs.values()
                    ]
                )
                status, data = self._upsert(api, batch)
                for key, answer in split_batch(status, data, id_property, list(inputs)).items():
                    results[inputs[key][0]] = answer
            for index, result in enumerate(results):
                if result is None:  # not in HubSpot's answer: once more, alone
                    record, context = items[index]
                    properties = contact_properties(record)
                    id_value = self._id_value(properties, context)
                    single = BatchInputSimplePublicObjectBatchInputUpsert(
                        inputs=[
                            SimplePublicObjectBatchInputUpsert(
                                id_property=id_property, id=id_value, properties=properties
                            )
                        ]
                    )
                    try:
                        results[index] = _result(*self._upsert(api, single))
                    except DeliveryError as exc:
                        results[index] = exc

        await self.call(upsert_all)
        return [
            r if r is not None else RetryableError("HubSpot did not answer for this contact")
            for r in results
        ]

    def _id_value(self, properties: dict[str, str], context: DeliveryContext) -> str:
        id_property = self.settings.id_property
        if id_property == "email":
            email = properties.get("email", "").strip()
            if not email:
                raise PermanentError(
                    "the record has no email, which HubSpot needs to find or create the "
                    "contact (id_property is email); map one or use a unique lead id property"
                )
            return email
        if not properties.get(id_property):
            properties[id_property] = context.lead_id
        return properties[id_property]


def _contact_key(id_property: str, value: str) -> str:
    # HubSpot matches emails case-insensitively.
    return value.strip().lower() if id_property == "email" else value


def daily_usage(headers: Mapping[str, str]) -> ApiUsage | None:
    """The daily allowance from ``X-HubSpot-RateLimit-Daily`` and ``...-Daily-Remaining``
    (HubSpot sends them to private apps on some tiers; None when absent)."""
    limit = _header(headers, "X-HubSpot-RateLimit-Daily")
    remaining = _header(headers, "X-HubSpot-RateLimit-Daily-Remaining")
    try:
        total, left = int(limit or ""), int(remaining or "")
    except ValueError:
        return None
    if total <= 0 or left < 0:
        return None
    return ApiUsage(used=max(0, total - left), limit=total, window="daily")


def split_batch(
    status: int, data: bytes, id_property: str, keys: list[str]
) -> dict[str, DeliveryResult | DeliveryError]:
    """A batch upsert's answer (200/201, or 207 with ``errors``) per contact key.

    Results are matched by the id property's value they carry; an error by the
    ids in its ``context``. A key missing from the answer is left out (the
    caller resends it alone); an error naming no id fails no lead by itself.
    """
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise RetryableError(f"HubSpot answered {status} without a JSON body", status_code=status)
    wanted = set(keys)
    out: dict[str, DeliveryResult | DeliveryError] = {}
    results = [r for r in body.get("results") or [] if isinstance(r, dict) and r.get("id")]
    for item in results:
        props = item.get("properties")
        value = props.get(id_property) if isinstance(props, dict) else None
        key = _contact_key(id_property, str(value)) if value is not None else None
        if key in wanted:
            detail = "created" if item.get("new") else "updated"
            out[key] = DeliveryResult(remote_id=str(item["id"]), status_code=status, detail=detail)
    if len(keys) == 1 and not out and len(results) == 1:  # an answer without properties
        first = results[0]
        detail = "created" if first.get("new") else "updated"
        out[keys[0]] = DeliveryResult(remote_id=str(first["id"]), status_code=status, detail=detail)
    for error in body.get("errors") or []:
        if not isinstance(error, dict):
            continue
        context = error.get("context")
        ids = context.get("ids") if isinstance(context, dict) else None
        for value in ids if isinstance(ids, list) else []:
            key = _contact_key(id_property, str(value))
            if key in wanted and key not in out:
                out[key] = _from_body(207, error, {})
    return out


def contact_properties(record: Mapping[str, Any]) -> dict[str, str]:
    """HubSpot property values are strings; None leaves a property unchanged."""
    out: dict[str, str] = {}
    for name, value in record.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, list | tuple):
            # Multiple checkboxes: HubSpot separates options with semicolons.
            out[name] = ";".join(str(v) for v in value if v is not None)
        elif isinstance(value, dict):
            raise PermanentError(
                f"property {name!r} holds an object; HubSpot properties take plain values"
            )
        else:
            out[name] = str(value)
    return out


def _read(response: Any) -> bytes:
    try:
        data: bytes = response.data
    finally:
        response.release_conn()
    return data


def _result(status: int, data: bytes) -> DeliveryResult:
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        # The upsert may have happened; retrying an upsert is harmless.
        raise RetryableError(f"HubSpot answered {status} without a JSON body", status_code=status)
    results = body.get("results")
    if isinstance(results, list) and results and isinstance(results[0], dict):
        first = results[0]
        if first.get("id"):
            detail = "created" if first.get("new") else "updated"
            return DeliveryResult(remote_id=str(first["id"]), status_code=status, detail=detail)
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        raise _from_body(status, errors[0], {})
    raise RetryableError(f"HubSpot answered {status} without a contact id", status_code=status)


def classify(exc: BaseException) -> DeliveryError:
    """The one place that turns SDK and urllib3 exceptions into Lead Bridge errors."""
    import urllib3

    refused = _http.address_refused(exc)
    if refused is not None:
        return PermanentError(f"HubSpot {refused}")
    if isinstance(exc, urllib3.exceptions.HTTPError):
        reason = getattr(exc, "reason", None) or exc
        return RetryableError(
            f"cannot reach HubSpot: {type(reason).__name__}: {_clip(str(reason))}"
        )
    status = getattr(exc, "status", None)
    if not isinstance(status, int) or status == 0:
        # The SDK reports TLS failures as status 0 with urllib3's text as the reason.
        reason = str(getattr(exc, "reason", "") or "").splitlines()
        return RetryableError(
            f"cannot reach HubSpot: {reason[0] if reason else type(exc).__name__}"
        )
    raw = getattr(exc, "body", None)
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = {}
    headers = getattr(exc, "headers", None) or {}
    return _from_body(status, body if isinstance(body, dict) else {}, headers)


def _from_body(status: int, body: Mapping[str, Any], headers: Mapping[str, str]) -> DeliveryError:
    category = str(body.get("category") or body.get("errorType") or "")
    retry_after = parse_retry_after(_header(headers, "Retry-After"))
    if status == 429 or category in ("RATE_LIMIT", "RATE_LIMITS"):
        policy = str(body.get("policyName") or "")
        if policy == "DAILY":
            return RateLimited(
                "HubSpot daily API limit reached; it resets at midnight in the account's time zone",
                status_code=status,
                retry_after=retry_after if retry_after is not None else until_next_hour(),
            )
        return RateLimited(
            f"HubSpot rate limit {policy or 'reached'}: {_describe(body)}",
            status_code=status,
            retry_after=retry_after if retry_after is not None else _RATE_LIMIT_FALLBACK,
        )
    if status == 207:
        # One input of a batch failed; the others (none here) went through.
        return PermanentError(f"HubSpot refused the contact: {_describe(body)}", status_code=status)
    error = error_for_status(status, _describe(body), retry_after=retry_after)
    if error is None:
        return RetryableError(f"HubSpot answered {status} with an error", status_code=status)
    if isinstance(error, AuthError):
        return AuthError(f"HubSpot refused the access token: {error.message}", status_code=status)
    return error


def until_next_hour(now: float | None = None) -> float:
    """Seconds to the next full UTC hour (at least one minute).

    HubSpot resets the daily limit at midnight in the account's time zone, which
    the connector does not know; probing hourly finds the reset within an hour for
    any time zone, at the cost of one refused request per hour.
    """
    current = time.time() if now is None else now
    wait = math.ceil(current / 3600) * 3600 - current
    return max(60.0, wait)


def _describe(body: Mapping[str, Any]) -> str:
    """HubSpot's category, error codes and the properties they name; never its
    messages, which quote values ("1,000 was not one of the allowed options")."""
    category = _token(str(body.get("category") or body.get("errorType") or ""))
    parts = _property_errors(str(body.get("message") or ""))
    nested = [e for e in body.get("errors") or [] if isinstance(e, dict)]
    for item in [body, *nested]:
        code = _token(str(item.get("code") or item.get("subCategory") or ""))
        context = _context(item.get("context"))
        part = f"{code} ({context})" if code and context else code or context
        if part and part not in parts:
            parts.append(part)
    existing = _EXISTING_ID.search(str(body.get("message") or ""))
    if existing:  # HubSpot's record id, not a value of the lead
        parts.append(f"existing contact id {existing.group(1)}")
    text = "; ".join(parts) or "no details"
    return _clip(f"{category}: {text}" if category else text)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def _token(text: str) -> str:
    """An error code, category or property name as is; anything else is left out."""
    return text if _TOKEN_RE.match(text) else ""


def _property_errors(message: str) -> list[str]:
    # "Property values were not valid: [{...,"error":"INVALID_OPTION","name":"numemployees"}]"
    _head, sep, tail = message.partition(": [")
    if not sep:
        return []
    try:
        items = json.loads("[" + tail)
    except ValueError:
        return []
    out = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and _token(str(item.get("name") or "")):
            out.append(f"{item['name']}: {_token(str(item.get('error') or '')) or 'invalid'}")
    return out


def _context(context: Any) -> str:
    """The context's keys; the values only of keys that hold names (properties, scopes)."""
    if not isinstance(context, dict):
        return ""
    parts = []
    for key, value in context.items():
        if not _token(str(key)):
            continue
        values = value if isinstance(value, list) else [value]
        names = [str(v) for v in values if _token(str(v))]
        if str(key) in _NAMING_CONTEXT and names:
            parts.append(f"{key}={','.join(names)}")
        else:
            parts.append(str(key))
    return " ".join(parts)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None
