"""Salesforce: one mapped record -> one sObject upsert (or create) over the REST API.

Flow of one delivery::

    send(record, context)
      -> worker thread: SFType.upsert("<external_id_field>/<quoted lead id>", body)
         (or SFType.create(body) when no external-ID field is configured)
      -> DeliveryResult(remote_id=<record id>, status_code=201|200|204)
      or classify(exc) -> PermanentError | RetryableError | RateLimited | AuthError

Batches (with an external-ID field): ``send_batch`` sends up to 200 leads as one sObject
Collections upsert (``PATCH .../composite/sobjects/<sobject>/<field>``, ``allOrNone:
false``); each record's ``success/created/errors`` becomes that lead's result, its
error codes classified as a refused single upsert's (``record_error``). Every answer's
``Sforce-Limit-Info`` (``api-usage=used/limit``) is the org's API usage
(``api_usage()``), which the engine's API budget guard reads.

Authentication. Tokens are fetched here with httpx from ``{login_url}/services/oauth2/token``
(client credentials, JWT bearer or the OAuth username-password grant) because
simple-salesforce hard-codes ``https://{domain}.salesforce.com`` for logins and so cannot
reach a My Domain proxy, a sandbox alias or a local fake. simple-salesforce only gets
the resulting access token + instance and never refreshes on its own: its built-in
refresh retries without bound and drops our headers.

Re-authentication is driven by the engine: a 401 (``INVALID_SESSION_ID``) or 403 raises
:class:`AuthError`; the engine calls :meth:`SalesforceConnector.reauthenticate` once and
retries once. Concurrent sends that failed with the same token trigger a single
token request; a send refused with a token that was already replaced retries with the
new one (:class:`connectors._blocking.BlockingConnector` tracks which token failed).

Blocking simple-salesforce calls run on the base's own thread pool (the default
asyncio pool has only ``cpu_count + 4`` threads, shared with everything else), over a
``requests.Session`` that applies ``timeout`` and ``ca_bundle`` to every request.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import quote, urlsplit

import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    FilePath,
    SecretStr,
    field_validator,
    model_validator,
)

from bridge import USER_AGENT
from bridge.config import Duration
from bridge.errors import (
    AuthError,
    DeliveryError,
    PermanentError,
    RateLimited,
    RetryableError,
    error_for_status,
)
from bridge.logs import event, redact, register_secret
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

if TYPE_CHECKING:  # the SDK is imported lazily: a Slack-only service never loads it
    import requests
    from simple_salesforce.api import SFType

log = logging.getLogger(__name__)

# Letters, digits and single underscores, starting with a letter; "__" only before a
# suffix (``__c``) or after a namespace prefix (``ns__Field__c``).
_API_NAME_RE = re.compile(
    r"^[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*(?:__[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*){0,2}$"
)
_RULE_ID_RE = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")
_API_VERSION_RE = re.compile(r"^\d{2,3}\.0$")

# Error codes Salesforce answers with a 4xx although a later attempt can succeed.
RETRYABLE_CODES = frozenset({"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE"})
# REQUEST_LIMIT_EXCEEDED means either the org's rolling 24-hour API allowance is spent
# ("TotalRequests Limit exceeded"), which frees up slowly, or too many concurrent
# long-running requests, which clears within a minute.
DAILY_LIMIT_BACKOFF = 3600.0
# sObject Collections take at most 200 records per call.
MAX_BATCH = 200
CONCURRENCY_LIMIT_BACKOFF = 60.0
# Threads for blocking calls; also the HTTP connection pool size, so that concurrent
# sends do not churn connections.
MAX_THREADS = BlockingConnector.max_threads
_MESSAGE_LIMIT = 500
# Salesforce error codes and API field names (Email, Lead_Id__c, npe01__Home__c).
_TOKEN_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.]{0,79}$")

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


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class _ApiError:
    code: str
    message: str
    fields: tuple[str, ...]


def _api_errors(content: Any) -> list[_ApiError]:
    """Salesforce's error body: a JSON list of ``{message, errorCode, fields}``."""
    if isinstance(content, dict):
        content = [content]
    if not isinstance(content, list):
        return []
    out = []
    for item in content:
        if isinstance(item, dict) and "errorCode" in item:
            fields = item.get("fields") or ()
            out.append(
                _ApiError(
                    str(item["errorCode"]),
                    str(item.get("message") or ""),
                    tuple(str(f) for f in fields) if isinstance(fields, list) else (),
                )
            )
    return out


def _scrub(text: str, hide: Collection[str]) -> str:
    """Remove record values and secrets from a text we quote (exception texts)."""
    for value in sorted(hide, key=len, reverse=True):
        if len(value) >= 3 and value in text:
            text = text.replace(value, "[value]")
    text = redact(text)
    return text if len(text) <= _MESSAGE_LIMIT else text[:_MESSAGE_LIMIT] + "..."


def _describe(content: Any) -> tuple[set[str], str]:
    """Salesforce's error codes and the fields they name, never its messages.

    The messages quote record values ("invalid email address: ann@x.io",
    "duplicate value found: ... with id: ...") in forms a scrubber cannot
    predict, so only the codes (``INVALID_EMAIL_ADDRESS``) and field names stay.
    """
    errors = _api_errors(content)
    if not errors:
        return set(), "no error code in the answer"
    parts = []
    for err in errors:
        part = _token(err.code) or "UNKNOWN"
        fields = [f for f in (_token(f) for f in err.fields) if f]
        if fields:
            part += f" (fields: {', '.join(fields)})"
        if err.code == "REQUEST_LIMIT_EXCEEDED":
            part += " (daily API requests)" if _daily_limit(err) else " (concurrent requests)"
        parts.append(part)
    text = "; ".join(parts)
    return {e.code for e in errors}, (
        text if len(text) <= _MESSAGE_LIMIT else text[:_MESSAGE_LIMIT] + "..."
    )


def _token(text: str) -> str:
    """An error code or an API field name as is; anything else is left out."""
    return text if _TOKEN_RE.match(text) else ""


def _daily_limit(err: _ApiError) -> bool:
    return "TotalRequests" in err.message


def classify(exc: BaseException, hide: Collection[str] = ()) -> DeliveryError:
    """The one place that turns simple-salesforce, requests and httpx exceptions into
    :mod:`bridge.errors`. ``hide``: record values to keep out of the stored message."""
    import requests
    from simple_salesforce.exceptions import SalesforceError, SalesforceMoreThanOneRecord

    refused = _http.address_refused(exc)
    if refused is not None:
        return PermanentError(f"Salesforce {refused}")
    if isinstance(exc, SalesforceMoreThanOneRecord):
        matches = len(exc.content) if isinstance(exc.content, list) else "several"
        return PermanentError(
            f"Salesforce HTTP 300: {matches} {exc.resource_name or 'Salesforce'} records share "
            "this lead's external id; deduplicate them in Salesforce",
            status_code=300,
        )
    if isinstance(exc, SalesforceError):
        return _classify_answer(exc.status, exc.content, f"Salesforce HTTP {exc.status}")
    if isinstance(exc, _http.TRANSPORT_ERRORS) and not isinstance(exc, requests.RequestException):
        # The token and limits requests (httpx over the guarded aiohttp transport).
        return _http.classify_transport_error(exc, "Salesforce")
    detail = _scrub(f"{type(exc).__name__}: {exc}", hide)
    if isinstance(exc, requests.Timeout | httpx.TimeoutException):
        return RetryableError(f"Salesforce request timed out ({detail})")
    if isinstance(
        exc, requests.exceptions.InvalidURL | httpx.InvalidURL | httpx.UnsupportedProtocol
    ):
        return PermanentError(f"Salesforce URL cannot be requested ({detail})")
    if isinstance(exc, requests.RequestException | httpx.HTTPError | OSError):
        return RetryableError(f"Salesforce connection failed ({detail})")
    raise TypeError(f"not a Salesforce error: {type(exc).__name__}") from exc


def _classify_answer(status: int, content: Any, prefix: str) -> DeliveryError:
    """Error codes (and the HTTP status) to a Lead Bridge error: one rule for a
    refused single upsert and for one record of a collection upsert."""
    codes, text = _describe(content)
    message = f"{prefix}: {text}"
    if "REQUEST_LIMIT_EXCEEDED" in codes:
        daily = any(_daily_limit(e) for e in _api_errors(content))
        wait = DAILY_LIMIT_BACKOFF if daily else CONCURRENCY_LIMIT_BACKOFF
        return RateLimited(message, status_code=status, retry_after=wait)
    if "INVALID_SESSION_ID" in codes or status == 401:
        return AuthError(message, status_code=status)
    if codes & RETRYABLE_CODES:
        return RetryableError(message, status_code=status)
    # 400/404/405 permanent, 403 auth, 429 rate limit, 5xx retryable
    error = error_for_status(status, "")
    if error is None:  # a 2xx cannot raise; keep the request, try again
        return RetryableError(message, status_code=status)
    return type(error)(message, status_code=status)


def record_error(errors: Any) -> DeliveryError:
    """One failed record of a collection upsert (``errors: [{statusCode, message,
    fields}]``), classified as a single upsert refused with those codes (HTTP 400)."""
    content = [
        {"errorCode": e.get("statusCode"), "message": e.get("message"), "fields": e.get("fields")}
        for e in (errors if isinstance(errors, list) else [])
        if isinstance(e, dict)
    ]
    return _classify_answer(400, content, "Salesforce refused the record")


def parse_limit_info(value: str | None) -> ApiUsage | None:
    """``Sforce-Limit-Info: api-usage=18/15000``: the org's API requests in its
    rolling 24 hours, used of allowed."""
    if not value:
        return None
    for part in value.split(","):
        name, _, usage = part.strip().partition("=")
        if name.strip() == "api-usage":
            used, _, limit = usage.partition("/")
            try:
                return ApiUsage(int(used), int(limit), window="rolling 24 h")
            except ValueError:
                return None
    return None


def token_error(status: int, body: Any) -> DeliveryError:
    """A refused token request (``{"error": ..., "error_description": ...}``)."""
    error = description = ""
    if isinstance(body, dict):
        error = str(body.get("error") or "")
        description = str(body.get("error_description") or "")
    text = _scrub(": ".join(p for p in (error, description) if p), ())
    message = f"Salesforce token endpoint HTTP {status}: {text or 'no error description'}"
    if status in (400, 401, 403):  # invalid_client, invalid_grant, inactive_user, ...
        return AuthError(message + "; check the destination's auth settings", status_code=status)
    classified = error_for_status(status, "")
    return type(classified)(message, status_code=status) if classified else RetryableError(message)


def _quote_id(value: str) -> str:
    # simple-salesforce does not quote the path segment; requests keeps %2F as is.
    if value.strip(".") == "":
        # "." and ".." would be resolved as relative path segments (requests unquotes
        # %2E back to "."), addressing another URL
        raise PermanentError(f"lead id {value!r} cannot be used as an external id in a URL")
    return quote(value, safe="")


def _values(value: Any) -> list[str]:
    """Every string inside a record, to keep out of stored error messages."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, list | tuple):
        return [text for item in value for text in _values(item)]
    return []


# --------------------------------------------------------------------------- connector


@dataclass(frozen=True)
class _Session:
    """One access token and the sObject client bound to it."""

    token: str
    instance_url: str
    sobject: SFType


def _http_session(settings: Settings) -> requests.Session:
    import requests
    from requests.adapters import HTTPAdapter

    timeout = settings.timeout
    # A per-request verify=<path> wins over REQUESTS_CA_BUNDLE; a session-level one
    # does not (requests merges the environment into each request).
    verify: str | bool = str(settings.ca_bundle) if settings.ca_bundle else True

    class _DefaultsSession(requests.Session):
        def request(self, *args: Any, **kwargs: Any) -> requests.Response:
            # simple-salesforce passes neither: requests would wait forever
            kwargs.setdefault("timeout", timeout)
            kwargs.setdefault("verify", verify)
            # A 3xx is an answer, not a hop (as for every outbound request).
            kwargs["allow_redirects"] = False
            return super().request(*args, **kwargs)

    session = _DefaultsSession()
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=MAX_THREADS)
    _http.guard_pool_manager(adapter.poolmanager, allow_private=settings.allow_private)
    session.mount("https://", adapter)
    session.headers.update(settings.session_headers())
    session.headers["User-Agent"] = USER_AGENT
    return session


class SalesforceConnector(BlockingConnector[_Session]):
    type_name = "salesforce"
    label = "Salesforce"
    requirement = "simple-salesforce"
    Settings: ClassVar[type[ConnectorSettings]] = Settings
    # No request-rate limit to honour: the API allowance is per rolling 24 h and
    # org-wide, and 25 long-running (> 20 s) requests at once is the other limit.
    flow_defaults = FlowDefaults(concurrency=25)
    # sObject Collections upsert takes at most 200 records.
    max_batch_size = MAX_BATCH

    def __init__(self, name: str, settings: ConnectorSettings) -> None:
        super().__init__(name, settings)
        assert isinstance(settings, Settings)
        self.config: Settings = settings
        self._http: httpx.AsyncClient | None = None
        self._requests: requests.Session | None = None
        self._usage: ApiUsage | None = None
        auth = settings.auth
        for secret in (auth.client_secret, auth.password, auth.security_token, auth.access_token):
            if secret is not None:
                register_secret(secret.get_secret_value())

    @classmethod
    def check_fields(cls, settings: ConnectorSettings, fields: list[str]) -> list[tuple[str, str]]:
        assert isinstance(settings, Settings)
        external = (settings.external_id_field or "").lower()
        problems = []
        for field in fields:
            if not is_api_name(field):
                problems.append(
                    (
                        field,
                        "not a Salesforce field API name (letters, digits and underscores, "
                        "starting with a letter, e.g. LastName or Lead_Source__c)",
                    )
                )
            elif field.lower() == "id":
                problems.append((field, "Id is assigned by Salesforce and cannot be set"))
            elif field.lower() == external:
                problems.append(
                    (
                        field,
                        f"{settings.external_id_field} is the external_id_field: "
                        "it is set to the lead id automatically",
                    )
                )
        return problems

    @property
    def call_timeout(self) -> float:
        # requests' timeout bounds each read; this bounds the whole call.
        return self.config.timeout + 1.0

    async def startup(self) -> None:
        # Idempotent: the engine calls it again after a failed start (token refused).
        if self._requests is None:
            self._requests = _http_session(self.config)
        if self._http is None:
            verify: ssl.SSLContext | bool = True
            if self.config.ca_bundle is not None:
                verify = ssl.create_default_context(cafile=str(self.config.ca_bundle))
            self._http = _http.make_client(
                timeout=self.config.timeout,
                max_connections=4,
                allow_private=self.config.allow_private,
                ssl_context=verify if isinstance(verify, ssl.SSLContext) else None,
            )
        if self._creds is None and self.config.external_id_field is None:
            event(
                log,
                "salesforce_plain_create",
                logging.WARNING,
                destination=self.name,
                detail="no external_id_field: a retried attempt can create a duplicate",
            )
        await super().startup()

    async def reauthenticate(self) -> None:
        if self.config.auth.mode == "token":
            raise NotImplementedError("auth.mode 'token' cannot renew a refused access token")
        await super().reauthenticate()

    async def send(self, record: Mapping[str, Any], context: DeliveryContext) -> DeliveryResult:
        if self._creds is None:
            raise RuntimeError("SalesforceConnector.startup() was not awaited")
        # Salesforce rejects the external-ID field in the body of an upsert by that field.
        skip = (self.config.external_id_field or "").lower()
        body = {k: v for k, v in record.items() if k.lower() != skip}
        lead_id = context.lead_id
        return await self.call(lambda session: self._deliver(session, body, lead_id))

    def batch_limit(self) -> int:
        # Collections upsert by the external id; plain creates are not batched (a
        # retried create collection would duplicate every record in it).
        return MAX_BATCH if self.config.external_id_field is not None else 1

    def api_usage(self) -> ApiUsage | None:
        """The org's API usage from the last answer's Sforce-Limit-Info header."""
        return self._usage

    async def send_batch(
        self, items: Sequence[tuple[Mapping[str, Any], DeliveryContext]]
    ) -> list[DeliveryResult | DeliveryError]:
        """sObject Collections upsert on the external id (allOrNone false): each
        record's success, created or errors become that lead's result."""
        if self._creds is None:
            raise RuntimeError("SalesforceConnector.startup() was not awaited")
        field = self.config.external_id_field
        assert field is not None, "batch_limit() is 1 without an external_id_field"
        skip = field.lower()
        records = [
            {"attributes": {"type": self.config.sobject}}
            | {k: v for k, v in record.items() if k.lower() != skip}
            | {field: context.lead_id}
            for record, context in items
        ]
        return await self.call(lambda session: self._upsert_collection(session, records))

    async def check(self) -> CheckResult:
        """Get a token (as startup does), then read the org's API limits with
        it: proves the credentials, the instance URL and the API version."""
        await self.startup()
        session = self._creds
        assert session is not None and self._http is not None
        url = f"{session.instance_url}/services/data/v{self.config.api_version}/limits/"
        try:
            response = await self._http.get(
                url, headers={"Authorization": f"Bearer {session.token}"}
            )
        except httpx.HTTPError as exc:
            raise classify(exc) from exc
        try:
            answer = response.json()
        except ValueError:
            answer = None
        status = response.status_code
        if status != 200 or not isinstance(answer, dict):
            _, text = _describe(answer)
            return CheckResult(
                False,
                f"token issued, but reading the API limits failed: HTTP {status}: {text}",
                status,
            )
        daily = answer.get("DailyApiRequests")
        if isinstance(daily, dict) and "Remaining" in daily:
            usage = f"{daily['Remaining']} of {daily.get('Max', '?')} daily API requests left"
        else:
            usage = "no DailyApiRequests limit reported"
        return CheckResult(
            True, f"token issued for {urlsplit(session.instance_url).hostname}; {usage}", status
        )

    async def close(self) -> None:
        await super().close()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._requests is not None:
            self._requests.close()
            self._requests = None

    # ---------------------------------------------------------------- worker thread

    def _upsert_collection(
        self, session: _Session, records: list[dict[str, Any]]
    ) -> list[DeliveryResult | DeliveryError]:
        import requests
        from simple_salesforce.exceptions import SalesforceError

        field = self.config.external_id_field
        url = (
            f"{session.instance_url}/services/data/v{self.config.api_version}"
            f"/composite/sobjects/{self.config.sobject}/{field}"
        )
        payload = {"allOrNone": False, "records": records}
        try:
            # Through simple-salesforce's request path (session, headers, its errors).
            response = session.sobject._call_salesforce("PATCH", url, data=json.dumps(payload))
        except (SalesforceError, requests.RequestException) as exc:
            raise classify(exc, hide=_values(records)) from exc
        self._note_usage(response)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, list) or len(answer) != len(records):
            # The upserts may have happened; upserting again is harmless.
            raise RetryableError(
                f"Salesforce answered {response.status_code} without one result per record",
                status_code=response.status_code,
            )
        out: list[DeliveryResult | DeliveryError] = []
        for item in answer:
            if isinstance(item, dict) and item.get("success"):
                created = bool(item.get("created"))
                out.append(
                    DeliveryResult(
                        remote_id=_record_id(item),
                        status_code=201 if created else 200,
                        detail="created" if created else "updated",
                    )
                )
            else:
                out.append(record_error(item.get("errors") if isinstance(item, dict) else None))
        return out

    def _note_usage(self, response: Any) -> None:
        usage = parse_limit_info(response.headers.get("Sforce-Limit-Info"))
        if usage is not None:
            self._usage = usage

    def _deliver(self, session: _Session, body: dict[str, Any], lead_id: str) -> DeliveryResult:
        import requests
        from simple_salesforce.exceptions import SalesforceError

        field = self.config.external_id_field
        try:
            if field is None:
                created = session.sobject.create(body)
                return DeliveryResult(
                    remote_id=_record_id(created), status_code=201, detail="created"
                )
            response = session.sobject.upsert(
                f"{field}/{_quote_id(lead_id)}", body, raw_response=True
            )
        except (SalesforceError, requests.RequestException) as exc:
            raise classify(exc, hide=_values(body)) from exc
        self._note_usage(response)
        status = response.status_code
        if status == 204:  # API < 46.0 answers an update without a body (and without the id)
            return DeliveryResult(remote_id=None, status_code=204, detail="updated")
        try:
            answer = response.json()
        except ValueError:
            answer = None
        detail = "created" if status == 201 else "updated"
        return DeliveryResult(remote_id=_record_id(answer), status_code=status, detail=detail)

    # ---------------------------------------------------------------- tokens

    async def authenticate(self) -> _Session:
        if self.config.auth.mode == "token":
            static = self.config.auth.access_token
            assert static is not None and self.config.instance_url is not None
            return self._bind(static.get_secret_value(), self.config.instance_url)
        assert self._http is not None
        url = f"{self.config.login_url}/services/oauth2/token"
        try:
            response = await self._http.post(
                url, data=self._grant(), headers={"Accept": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise classify(exc) from exc
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code != 200:
            event(
                log,
                "salesforce_token",
                logging.WARNING,
                destination=self.name,
                mode=self.config.auth.mode,
                outcome="refused",
                status=response.status_code,
            )
            raise token_error(response.status_code, answer)
        if not isinstance(answer, dict) or not answer.get("access_token"):
            raise RetryableError("Salesforce token endpoint answered without an access_token")
        token = str(answer["access_token"])
        instance_url = self.config.instance_url or str(answer.get("instance_url") or "")
        if not instance_url.startswith("https://"):
            raise PermanentError(
                f"Salesforce token endpoint returned no https instance_url ({instance_url!r}); "
                "set instance_url in the destination settings"
            )
        event(
            log, "salesforce_token", destination=self.name, mode=self.config.auth.mode, outcome="ok"
        )
        return self._bind(token, instance_url)

    def _grant(self) -> dict[str, str]:
        auth = self.config.auth
        secret = auth.client_secret.get_secret_value() if auth.client_secret else ""
        if auth.mode == "client_credentials":
            return {
                "grant_type": "client_credentials",
                "client_id": auth.client_id or "",
                "client_secret": secret,
            }
        if auth.mode == "password":
            password = auth.password.get_secret_value() if auth.password else ""
            token = auth.security_token.get_secret_value() if auth.security_token else ""
            return {
                "grant_type": "password",
                "client_id": auth.client_id or "",
                "client_secret": secret,
                "username": auth.username or "",
                "password": password + token,
            }
        return {
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "assertion": self._jwt_assertion(),
        }

    def _jwt_assertion(self) -> str:
        import jwt

        auth = self.config.auth
        assert auth.private_key_file is not None
        claims = {
            "iss": auth.client_id,
            "sub": auth.username,
            # The authorization server: login/test.salesforce.com or the My Domain URL.
            "aud": self.config.login_url,
            "exp": int(time.time()) + 180,
        }
        try:
            key = Path(auth.private_key_file).read_bytes()
            return jwt.encode(claims, key, algorithm="RS256")
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            raise AuthError(
                f"cannot sign the JWT with auth.private_key_file ({type(exc).__name__}); "
                "expected a PEM RSA private key"
            ) from exc

    def _bind(self, token: str, instance_url: str) -> _Session:
        from simple_salesforce.api import SFType

        parts = urlsplit(instance_url)
        instance = parts.hostname or ""
        if parts.port not in (None, 443):
            instance += f":{parts.port}"
        # No `salesforce=` argument: SFType then never refreshes the token by itself.
        sobject = SFType(
            self.config.sobject,
            session_id=token,
            sf_instance=instance,
            sf_version=self.config.api_version,
            session=self._requests,
        )
        return _Session(token, instance_url, sobject)


def _record_id(answer: Any) -> str | None:
    if isinstance(answer, Mapping) and answer.get("id"):
        return str(answer["id"])
    return None
