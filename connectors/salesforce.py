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

Where the rest lives: the settings in :mod:`connectors.salesforce_settings`, the
token flows (client credentials, JWT bearer, username-password, fetched with httpx)
in :mod:`connectors.salesforce_auth`, the classification of answers and failures in
:mod:`connectors.salesforce_errors`. simple-salesforce only gets the resulting access
token + instance and never refreshes on its own.

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

import importlib.util
import json
import logging
import ssl
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, urlsplit

import httpx

from bridge import USER_AGENT
from bridge.errors import ConfigError, DeliveryError, PermanentError, RetryableError
from bridge.logs import event, register_secret
from connectors import _http, _urllib3
from connectors._blocking import BlockingConnector
from connectors.base import (
    ApiUsage,
    CheckResult,
    ConnectorSettings,
    DeliveryContext,
    DeliveryResult,
    FlowDefaults,
)
from connectors.salesforce_auth import fetch_token
from connectors.salesforce_errors import (
    classify,
    describe,
    parse_limit_info,
    record_error,
    record_values,
    token_error,
)
from connectors.salesforce_settings import AuthSettings, Settings, is_api_name

if TYPE_CHECKING:  # the SDK is imported lazily: a Slack-only service never loads it
    import requests
    from simple_salesforce.api import SFType

__all__ = [
    "MAX_BATCH",
    "AuthSettings",
    "SalesforceConnector",
    "Settings",
    "classify",
    "is_api_name",
    "parse_limit_info",
    "record_error",
    "token_error",
]

log = logging.getLogger(__name__)

# sObject Collections take at most 200 records per call.
MAX_BATCH = 200
# Threads for blocking calls; also the HTTP connection pool size, so that concurrent
# sends do not churn connections.
MAX_THREADS = BlockingConnector.max_threads


def _quote_id(value: str) -> str:
    # simple-salesforce does not quote the path segment; requests keeps %2F as is.
    if value.strip(".") == "":
        # "." and ".." would be resolved as relative path segments (requests unquotes
        # %2E back to "."), addressing another URL
        raise PermanentError(f"lead id {value!r} cannot be used as an external id in a URL")
    return quote(value, safe="")


# --------------------------------------------------------------------------- connector


class _Session:
    """One access token and the sObject client bound to it.

    The client is built on its first use, on a pool thread: simple-salesforce and
    requests (tens of MB, a good part of a second to import) stay off the start path.
    """

    def __init__(self, token: str, instance_url: str, build: Callable[[str, str], SFType]) -> None:
        self.token = token
        self.instance_url = instance_url
        self._build = build
        self._sobject: SFType | None = None
        self._lock = threading.Lock()

    @property
    def sobject(self) -> SFType:
        with self._lock:
            if self._sobject is None:
                self._sobject = self._build(self.token, self.instance_url)
            return self._sobject


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
    _urllib3.guard_pool_manager(adapter.poolmanager, allow_private=settings.allow_private)
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
        # Created with the first sObject client (see _Session), shared by all.
        self._requests: requests.Session | None = None
        self._requests_lock = threading.Lock()
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
            _, text = describe(answer)
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
        with self._requests_lock:
            requests_session, self._requests = self._requests, None
        if requests_session is not None:
            requests_session.close()

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
            raise classify(exc, hide=record_values(records)) from exc
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
            raise classify(exc, hide=record_values(body)) from exc
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
        # The SDK is imported at the first call; whether it is installed is known now.
        if importlib.util.find_spec("simple_salesforce") is None:
            raise ConfigError(
                f"destination {self.name!r} (type salesforce) needs simple-salesforce: "
                "pip install 'lead-bridge[salesforce]'"
            )
        if self.config.auth.mode == "token":
            static = self.config.auth.access_token
            assert static is not None and self.config.instance_url is not None
            return self._bind(static.get_secret_value(), self.config.instance_url)
        assert self._http is not None
        token, instance_url = await fetch_token(self._http, self.config, self.name)
        return self._bind(token, instance_url)

    def _bind(self, token: str, instance_url: str) -> _Session:
        return _Session(token, instance_url, self._sobject_client)

    def _sobject_client(self, token: str, instance_url: str) -> SFType:
        """The SDK's client for one token (on a pool thread, at its first call)."""
        from simple_salesforce.api import SFType

        with self._requests_lock:
            if self._requests is None:
                self._requests = _http_session(self.config)
            requests_session = self._requests
        parts = urlsplit(instance_url)
        instance = parts.hostname or ""
        if parts.port not in (None, 443):
            instance += f":{parts.port}"
        # No `salesforce=` argument: SFType then never refreshes the token by itself.
        return SFType(
            self.config.sobject,
            session_id=token,
            sf_instance=instance,
            sf_version=self.config.api_version,
            session=requests_session,
        )


def _record_id(answer: Any) -> str | None:
    if isinstance(answer, Mapping) and answer.get("id"):
        return str(answer["id"])
    return None
