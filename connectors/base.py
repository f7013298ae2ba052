"""The connector interface.

A connector turns one mapped record into one API call and translates the
answer into a :class:`DeliveryResult` or a classified
:class:`~bridge.errors.DeliveryError`. It does not retry, sleep or log
payloads: the delivery engine owns retries, backoff, rate limits and the
idempotency log.

A custom connector is a subclass of :class:`Connector` with a pydantic
``Settings`` model. Register it in the ``lead_bridge.connectors`` entry-point
group of your own package, or name it in YAML as ``type: "my_module:MyConnector"``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from bridge.errors import (
    AuthError,
    DeliveryError,
    PermanentError,
    RateLimited,
    RetryableError,
)

__all__ = [
    "ApiUsage",
    "AuthError",
    "CheckResult",
    "Connector",
    "ConnectorSettings",
    "DeliveryContext",
    "DeliveryError",
    "DeliveryResult",
    "FlowDefaults",
    "PermanentError",
    "RateLimited",
    "RetryableError",
]


class ConnectorSettings(BaseModel):
    """Base for a connector's ``settings:`` model. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class FlowDefaults:
    """Per-type defaults for the engine's flow control (overridable per destination)."""

    concurrency: int = 8
    rate_per_second: float | None = None  # None: no rate limit
    burst: int | None = None
    # The request limit the service documents, as (requests, seconds), when it has
    # one the bucket can honour: the defaults must stay under it (burst + rate x seconds).
    documented_limit: tuple[int, float] | None = None


@dataclass(frozen=True)
class DeliveryContext:
    """What a connector may know about the delivery besides the mapped record."""

    lead_id: str
    destination: str
    attempt: int
    # Stable per lead and destination: use it as the remote idempotency key.
    idempotency_key: str
    # The lead exactly as the provider sent it (for connectors that forward it).
    lead: Mapping[str, Any] = field(default_factory=dict)
    received_at: float = 0.0


@dataclass(frozen=True)
class DeliveryResult:
    """A successful delivery: what the idempotency log records."""

    remote_id: str | None = None
    status_code: int | None = None
    detail: str | None = None


@dataclass(frozen=True)
class ApiUsage:
    """How much of its API allowance the remote service reports as used.

    ``used`` of ``limit`` requests in the service's window (Salesforce: the org's
    rolling 24 hours, ``Sforce-Limit-Info``; HubSpot: the day, its daily-limit
    headers). The engine's API budget guard reads it after every call.
    """

    used: int
    limit: int
    window: str = "daily"

    @property
    def share(self) -> float:
        return self.used / self.limit if self.limit > 0 else 0.0


@dataclass(frozen=True)
class CheckResult:
    """The answer of :meth:`Connector.check`, shown to the operator as is.

    ``ok`` is None when the connector has no check. ``detail`` says what was
    tried and what came back; it never holds a secret, a token or a URL's
    secret part.
    """

    ok: bool | None
    detail: str
    status_code: int | None = None


class Connector:
    """Base class of every connector.

    Subclasses set ``type_name`` and ``Settings`` and implement :meth:`send`.
    """

    type_name: ClassVar[str] = ""
    Settings: ClassVar[type[ConnectorSettings]] = ConnectorSettings
    flow_defaults: ClassVar[FlowDefaults] = FlowDefaults()
    # The pip requirement that provides this connector's SDK, for error hints.
    requirement: ClassVar[str | None] = None
    # Mapping rules used when a destination has no ``mapping:`` (target -> rule).
    # ``None`` means "send the lead as received".
    default_mapping: ClassVar[Mapping[str, Any] | None] = None

    # Set by the delivery engine (None outside it): see next_request().
    request_gate: Callable[[], Awaitable[None]] | None = None

    def __init__(self, name: str, settings: ConnectorSettings) -> None:
        self.name = name
        self.settings = settings

    async def next_request(self) -> None:
        """Await before each API request after the first of one send()/send_batch().

        The engine takes the first request's rate token itself; this takes one for
        every further request, so all of them keep to the destination's rate, and
        raises :class:`RateLimited` while a 429 has paused the destination.
        """
        if self.request_gate is not None:
            await self.request_gate()

    @classmethod
    def check_fields(cls, settings: ConnectorSettings, fields: list[str]) -> list[tuple[str, str]]:
        """Validate mapping target fields at config load.

        Return ``(field, problem)`` pairs for fields this connector cannot accept.
        """
        return []

    async def startup(self) -> None:
        """Open clients, fetch tokens. Called once before the first send."""

    async def send(self, record: Mapping[str, Any], context: DeliveryContext) -> DeliveryResult:
        raise NotImplementedError

    # Leads one API call may carry when the connector implements send_batch();
    # 1: no batching. An instance may lower it (batch_limit()).
    max_batch_size: ClassVar[int] = 1

    def batch_limit(self) -> int:
        """How many leads this instance's send_batch() takes per call (1: none)."""
        return self.max_batch_size

    async def send_batch(
        self, items: Sequence[tuple[Mapping[str, Any], DeliveryContext]]
    ) -> list[DeliveryResult | DeliveryError]:
        """Deliver several leads in one API call (the engine calls it with 2 to
        batch_limit() items of one destination).

        Return one entry per item, in order: a :class:`DeliveryResult`, or the
        classified :class:`DeliveryError` that send() would have raised for that
        lead alone. Raise only for what fails the whole call (connection error,
        429, 5xx, refused credentials): the engine then treats every lead of the
        batch as if its own send() had raised it.
        """
        raise NotImplementedError

    def api_usage(self) -> ApiUsage | None:
        """The API usage the remote reported with its last answer, if it reports any."""
        return None

    async def check(self) -> CheckResult:
        """Check the credentials and reachability without delivering a lead.

        Called on a connector that was not started; the caller closes it
        afterwards. A classified :class:`DeliveryError` raised here is shown as
        a failed check with its message. Connectors without a cheap
        authenticated request keep this default.
        """
        return CheckResult(None, f"connector type {self.type_name!r} has no credentials check")

    async def reauthenticate(self) -> None:
        """Refresh credentials after an :class:`AuthError`; the engine retries once.

        Connectors without renewable credentials keep the default, which makes the
        engine give up at once.
        """
        raise NotImplementedError

    async def close(self) -> None:
        """Release clients and files."""
