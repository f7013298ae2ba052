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
imported at the first call, on a pool thread (not when the destination starts).
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from bridge import USER_AGENT
from bridge.errors import (
    ConfigError,
    DeliveryError,
    PermanentError,
    RetryableError,
)
from bridge.logs import redact, register_secret
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
from connectors.hubspot_answers import (
    MAX_BATCH,
    classify,
    contact_key,
    daily_usage,
    describe,
    read_body,
    split_batch,
    until_next_hour,
    upsert_result,
)
from connectors.hubspot_settings import PROPERTY_HINT, PROPERTY_RE, HubSpotSettings

__all__ = [
    "MAX_BATCH",
    "HubSpotConnector",
    "HubSpotSettings",
    "classify",
    "contact_properties",
    "daily_usage",
    "split_batch",
    "until_next_hour",
]

if TYPE_CHECKING:
    from hubspot.crm.contacts import BatchApi

# HubSpot's token introspection for private apps: the scopes of a token.
TOKEN_INFO_PATH = "/oauth/v2/private-apps/get/access-token-info"  # noqa: S105 - a path
# What send() needs: upserting contacts.
REQUIRED_SCOPE = "crm.objects.contacts.write"

_INSTALL_HINT = "pip install 'lead-bridge[hubspot]'"
_POOL_SIZE = 32


class _Client:
    """The SDK client of one authentication, built at its first call on a pool
    thread: hubspot-api-client (tens of MB, a good part of a second to import)
    stays off the start path."""

    def __init__(self, build: Callable[[], BatchApi]) -> None:
        self._build = build
        self._api: BatchApi | None = None
        self._lock = threading.Lock()

    @property
    def api(self) -> BatchApi:
        with self._lock:
            if self._api is None:
                self._api = self._build()
            return self._api

    def close(self) -> None:
        with self._lock:
            api, self._api = self._api, None
        if api is not None:
            # Calls still running on the old client finish; its connections are not reused.
            api.api_client.rest_client.pool_manager.clear()
            api.api_client.close()


class HubSpotConnector(BlockingConnector[_Client]):
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
            (name, f"not a HubSpot property internal name ({PROPERTY_HINT})")
            for name in fields
            if not PROPERTY_RE.match(name)
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

    async def authenticate(self) -> _Client:
        # A private app token cannot be refreshed: re-authentication builds a fresh
        # client, which gives a passing 401 one more chance; a revoked token fails
        # again and the engine gives up.
        # The SDK is imported at the first call; whether it is installed is known now.
        if importlib.util.find_spec("hubspot") is None:
            raise ConfigError(
                f"destination {self.name!r} (type hubspot) needs hubspot-api-client: "
                f"{_INSTALL_HINT}"
            )
        return _Client(self._build_api)

    def retire(self, creds: _Client) -> None:
        creds.close()

    @property
    def _api(self) -> BatchApi | None:
        return self._creds.api if self._creds is not None else None

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
            message = describe(body) if isinstance(body, dict) else ""
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
        _urllib3.guard_pool_manager(
            api.api_client.rest_client.pool_manager, allow_private=self.settings.allow_private
        )
        return api

    async def send(self, record: Mapping[str, Any], context: DeliveryContext) -> DeliveryResult:
        if self._creds is None:
            raise RuntimeError(f"HubSpot destination {self.name!r} was not started")
        properties = contact_properties(record)
        id_value = self._id_value(properties, context)
        return upsert_result(*await self._request([(id_value, properties)]))

    async def _request(self, inputs: list[tuple[str, dict[str, str]]]) -> tuple[int, bytes]:
        """One batch upsert of ``(id, properties)`` inputs on the connector's pool."""
        return await self.call(lambda client: self._upsert(client, inputs))

    def _upsert(
        self, client: _Client, inputs: list[tuple[str, dict[str, str]]]
    ) -> tuple[int, bytes]:
        """One batch upsert call, on the pool's thread (reading the body blocks too)."""
        api = client.api
        from hubspot.crm.contacts import (
            BatchInputSimplePublicObjectBatchInputUpsert,
            SimplePublicObjectBatchInputUpsert,
        )

        batch = BatchInputSimplePublicObjectBatchInputUpsert(
            inputs=[
                SimplePublicObjectBatchInputUpsert(
                    id_property=self.settings.id_property, id=id_value, properties=properties
                )
                for id_value, properties in inputs
            ]
        )
        try:
            # Unparsed answer: the SDK's models drop 201 bodies and hide the status.
            response = api.upsert_with_http_info(
                batch, _request_timeout=self.settings.timeout, _preload_content=False
            )
        except self._sdk_errors as exc:
            self._note_usage(getattr(exc, "headers", None))
            raise classify(exc) from exc
        self._note_usage(response.headers)
        return response.status, read_body(response)

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
        id_property = self.settings.id_property
        results: list[DeliveryResult | DeliveryError | None] = [None] * len(items)
        rounds: list[dict[str, tuple[int, str, dict[str, str]]]] = []
        for index, (record, context) in enumerate(items):
            try:
                properties = contact_properties(record)
                id_value = self._id_value(properties, context)
                key = contact_key(id_property, id_value)
            except PermanentError as exc:
                results[index] = exc
                continue
            target = next((r for r in rounds if key not in r), None)
            if target is None:
                target = {}
                rounds.append(target)
            target[key] = (index, id_value, properties)

        # One request per round, then one per lead the answers left out; each
        # after the first takes its own rate token (next_request).
        first = True
        for inputs in rounds:
            if not first:
                await self.next_request()
            first = False
            status, data = await self._request(
                [(id_value, props) for _, id_value, props in inputs.values()]
            )
            for key, answer in split_batch(status, data, id_property, list(inputs)).items():
                results[inputs[key][0]] = answer
        for index, result in enumerate(results):
            if result is not None:
                continue
            # Not in HubSpot's answer: once more, alone (an upsert, so harmless).
            record, context = items[index]
            properties = contact_properties(record)
            single = [(self._id_value(properties, context), properties)]
            try:
                if not first:
                    await self.next_request()
                first = False
                results[index] = upsert_result(*await self._request(single))
            except DeliveryError as exc:
                results[index] = exc
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
