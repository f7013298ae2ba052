"""Contract tests a connector author runs against their own connector.

    from connectors.testing import Scenario, check_connector

    @pytest.mark.respx(using="httpx")  # a client from connectors._http.make_client
    async def test_contract(respx_mock):
        route = respx_mock.post("https://example.test/hook")
        await check_connector(
            MyConnector,
            {"url": "https://example.test/hook"},
            {"name": "Ada Lovelace", "email": "ada@example.com"},
            scenarios=[
                Scenario("ok", lambda: route.respond(200)),
                Scenario("throttled", lambda: route.respond(429), expect=RateLimited),
                Scenario("refused", lambda: route.respond(400), expect=PermanentError),
            ],
            accepted_fields=["name", "email"],
            rejected_fields=["no_such_field"],
        )

``check_connector`` verifies what the delivery engine relies on:

* the class has a ``type_name``, a ``Settings`` model deriving from
  :class:`~connectors.base.ConnectorSettings` that rejects unknown keys, and
  :class:`~connectors.base.FlowDefaults`;
* ``check_fields`` accepts ``accepted_fields`` and names each of ``rejected_fields``;
* ``startup`` and ``close`` may each be called twice;
* for every scenario, ``send`` returns a :class:`~connectors.base.DeliveryResult` or
  raises the expected :class:`~bridge.errors.DeliveryError` subclass, nothing else;
* no string value of the record (names, emails, phones...) appears in any log
  line or error message produced meanwhile.

A failed check raises :class:`ContractViolation` (an ``AssertionError``), so it
reads as a test failure in pytest or any other runner.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from bridge.errors import DeliveryError
from connectors.base import (
    Connector,
    ConnectorSettings,
    DeliveryContext,
    DeliveryResult,
    FlowDefaults,
)

__all__ = ["ContractViolation", "Scenario", "check_connector", "sample_context"]

# Values shorter than this are too common ("US", "1") to be evidence of a leak.
_MIN_LEAK_LEN = 4


class ContractViolation(AssertionError):
    """The connector breaks the contract the delivery engine relies on."""


@dataclass(frozen=True)
class Scenario:
    """One call of ``send`` against a fake remote.

    ``arrange`` prepares the fake (a respx route, a local server's next answer,
    a file made read-only...) and may be async; ``expect`` is the error class
    ``send`` must raise, or ``None`` for success.
    """

    name: str
    arrange: Callable[[], Any]
    expect: type[DeliveryError] | None = None


def sample_context(
    destination: str = "contract", lead_id: str = "led_contract0001"
) -> DeliveryContext:
    return DeliveryContext(
        lead_id=lead_id,
        destination=destination,
        attempt=1,
        idempotency_key=f"{lead_id}:{destination}",
        lead={},
        received_at=0.0,
    )


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(record.getMessage())
        except Exception:  # a broken format string is the author's bug, not ours
            self.lines.append(str(record.msg))
        if record.exc_info and record.exc_info[1] is not None:
            self.lines.append(logging.Formatter().formatException(record.exc_info))


@contextmanager
def _capture_logs() -> Iterator[_Capture]:
    handler = _Capture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        if len(value.strip()) >= _MIN_LEAK_LEN:
            yield value.strip()
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _fail(cls: type[Connector], message: str) -> ContractViolation:
    return ContractViolation(f"{cls.__module__}.{cls.__qualname__}: {message}")


def _check_class(cls: type[Connector], settings: Mapping[str, Any]) -> ConnectorSettings:
    if not (isinstance(cls, type) and issubclass(cls, Connector)):
        raise ContractViolation(f"{cls!r} is not a subclass of connectors.base.Connector")
    if not isinstance(cls.type_name, str) or not cls.type_name:
        raise _fail(cls, "type_name must be a non-empty string")
    if not (isinstance(cls.Settings, type) and issubclass(cls.Settings, ConnectorSettings)):
        raise _fail(cls, "Settings must subclass connectors.base.ConnectorSettings")
    if not isinstance(cls.flow_defaults, FlowDefaults):
        raise _fail(cls, "flow_defaults must be a connectors.base.FlowDefaults")
    if cls.send is Connector.send:
        raise _fail(cls, "send() is not implemented")
    try:
        model = cls.Settings.model_validate(dict(settings))
    except ValidationError as exc:
        raise _fail(cls, f"the given settings do not validate:\n{exc}") from exc
    try:
        cls.Settings.model_validate({**settings, "__contract_unknown_key__": 1})
    except ValidationError:
        pass
    else:
        raise _fail(cls, "Settings accepts unknown keys; a typo must be a config error")
    return model


def _check_fields(
    cls: type[Connector],
    settings: ConnectorSettings,
    accepted: Sequence[str] | None,
    rejected: Sequence[str],
) -> None:
    if accepted is not None:
        problems = cls.check_fields(settings, list(accepted))
        if problems:
            raise _fail(cls, f"check_fields refused accepted fields: {problems}")
    for name in rejected:
        problems = cls.check_fields(settings, [name])
        if not any(field == name and message for field, message in problems):
            raise _fail(cls, f"check_fields did not name the unacceptable field {name!r}")


async def _run(value: Any) -> None:
    if inspect.isawaitable(value):
        await value


async def check_connector(
    cls: type[Connector],
    settings: Mapping[str, Any],
    record: Mapping[str, Any],
    *,
    scenarios: Sequence[Scenario] = (),
    accepted_fields: Sequence[str] | None = None,
    rejected_fields: Sequence[str] = (),
    context: DeliveryContext | None = None,
    make: Callable[[str, ConnectorSettings], Connector] | None = None,
) -> list[DeliveryResult]:
    """Run the contract; return the results of the successful scenarios.

    ``make`` builds the instance (default ``cls(name, settings)``), for connectors
    whose tests inject a transport or a fake client.
    """
    model = _check_class(cls, settings)
    _check_fields(cls, model, accepted_fields, rejected_fields)
    context = context or sample_context()
    connector = (make or cls)(context.destination, model)
    secrets = set(_strings(record))
    results: list[DeliveryResult] = []
    with _capture_logs() as logs:
        await connector.startup()
        await connector.startup()
        try:
            for scenario in scenarios:
                await _run(scenario.arrange())
                results.extend(await _send_one(cls, connector, record, context, scenario, secrets))
        finally:
            await connector.close()
            await connector.close()
    for line in logs.lines:
        leaked = [value for value in secrets if value in line]
        if leaked:
            raise _fail(cls, f"a log line contains record values {leaked}: {line!r}")
    return results


async def _send_one(
    cls: type[Connector],
    connector: Connector,
    record: Mapping[str, Any],
    context: DeliveryContext,
    scenario: Scenario,
    secrets: set[str],
) -> list[DeliveryResult]:
    where = f"scenario {scenario.name!r}"
    try:
        result = await connector.send(record, context)
    except DeliveryError as exc:
        if scenario.expect is None:
            raise _fail(cls, f"{where}: expected success, got {exc!r}") from exc
        if not isinstance(exc, scenario.expect):
            raise _fail(cls, f"{where}: expected {scenario.expect.__name__}, got {exc!r}") from exc
        leaked = [value for value in secrets if value in str(exc)]
        if leaked:
            raise _fail(cls, f"{where}: the error message contains record values {leaked}") from exc
        return []
    except Exception as exc:
        raise _fail(
            cls,
            f"{where}: send raised {type(exc).__name__}, not a bridge.errors.DeliveryError; "
            "classify library errors in one place",
        ) from exc
    if scenario.expect is not None:
        raise _fail(cls, f"{where}: expected {scenario.expect.__name__}, got success {result!r}")
    if not isinstance(result, DeliveryResult):
        raise _fail(cls, f"{where}: send returned {result!r}, not a DeliveryResult")
    return [result]
