"""Test doubles: a scripted connector and a controllable clock.

A destination uses the scripted connector with
``type: "tests.fakes:ScriptedConnector"`` and ``settings: {script: NAME}``;
the test registers ``scripts[NAME] = Script([...])`` with one action per call,
``scripts`` being the test's own registry (the ``scripts`` fixture).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.errors import AuthError, DeliveryError
from connectors.base import (
    ApiUsage,
    Connector,
    ConnectorSettings,
    DeliveryContext,
    DeliveryResult,
    FlowDefaults,
)


@dataclass
class Call:
    lead_id: str
    attempt: int
    record: dict[str, Any]
    idempotency_key: str
    at: float


@dataclass
class Script:
    """Actions taken by successive sends: an exception to raise, ``"ok"``,
    ``"block"`` (wait until ``release`` is set), ``("block", exc)`` (wait, then
    raise), or an async callable taking the context and returning one of those.
    After the list: ``"ok"``."""

    actions: list[Any] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    reauths: int = 0
    reauth_error: Exception | None = None
    release: asyncio.Event | None = None
    clock: Any = None
    # Exceptions raised by successive startup() calls; afterwards startup succeeds.
    startup_errors: list[Exception] = field(default_factory=list)
    startups: int = 0
    # Batching connector: one entry per send_batch call (its lead ids), the remote's
    # records by upsert key (the lead id), and the API usage it reports.
    batches: list[list[str]] = field(default_factory=list)
    remote: dict[str, dict[str, Any]] = field(default_factory=dict)
    usage: ApiUsage | None = None

    def next_action(self) -> Any:
        return self.actions.pop(0) if self.actions else "ok"


# The running test's scripts by name: installed by the ``scripts`` fixture
# (tests/conftest.py), so that no script outlives its test.
_scripts: dict[str, Script] | None = None


def install_scripts(scripts: dict[str, Script] | None) -> None:
    global _scripts
    _scripts = scripts


def current_scripts() -> dict[str, Script]:
    if _scripts is None:
        raise AssertionError("a scripted connector needs the test's `scripts` fixture")
    return _scripts


class ScriptedSettings(ConnectorSettings):
    script: str = "default"


class ScriptedConnector(Connector):
    type_name = "scripted"
    Settings = ScriptedSettings
    flow_defaults = FlowDefaults(concurrency=4)

    @property
    def script(self) -> Script:
        assert isinstance(self.settings, ScriptedSettings)
        return current_scripts().setdefault(self.settings.script, Script())

    async def startup(self) -> None:
        script = self.script
        script.startups += 1
        if script.startup_errors:
            raise script.startup_errors.pop(0)

    async def send(self, record: Mapping[str, Any], context: DeliveryContext) -> DeliveryResult:
        script = self.script
        at = script.clock.time() if script.clock else 0.0
        script.calls.append(
            Call(context.lead_id, context.attempt, dict(record), context.idempotency_key, at)
        )
        action = script.next_action()
        if callable(action) and not isinstance(action, BaseException):
            action = await action(context)
        if action == "block" or (isinstance(action, tuple) and action[0] == "block"):
            assert script.release is not None
            await script.release.wait()
            action = action[1] if isinstance(action, tuple) else "ok"
        if isinstance(action, BaseException):
            raise action
        return DeliveryResult(remote_id=f"rec-{context.lead_id}", status_code=201)

    async def reauthenticate(self) -> None:
        script = self.script
        script.reauths += 1
        if script.reauth_error is not None:
            raise script.reauth_error


class BatchingSettings(ScriptedSettings):
    batch: int = 3


class BatchingConnector(ScriptedConnector):
    """The scripted connector with send_batch: an upsert by lead id, per batch one
    action from the script: ``"ok"``, an exception (the whole call fails),
    ``"block"`` (applied, then wait for ``release``: a call the CRM saw whose answer
    never came), or a dict lead id -> exception (those leads fail, the others not)."""

    type_name = "batching"
    Settings = BatchingSettings
    max_batch_size = 50

    def batch_limit(self) -> int:
        assert isinstance(self.settings, BatchingSettings)
        return self.settings.batch

    async def send(self, record: Mapping[str, Any], context: DeliveryContext) -> DeliveryResult:
        result = await super().send(record, context)
        self.script.remote[context.lead_id] = dict(record)
        return result

    async def send_batch(
        self, items: Sequence[tuple[Mapping[str, Any], DeliveryContext]]
    ) -> list[DeliveryResult | DeliveryError]:
        script = self.script
        at = script.clock.time() if script.clock else 0.0
        script.batches.append([context.lead_id for _, context in items])
        for record, context in items:
            script.calls.append(
                Call(context.lead_id, context.attempt, dict(record), context.idempotency_key, at)
            )
        action = script.next_action()
        if isinstance(action, BaseException):
            raise action
        failures: dict[str, DeliveryError] = action if isinstance(action, dict) else {}
        for record, context in items:
            if context.lead_id not in failures:
                script.remote[context.lead_id] = dict(record)
        if action == "block":
            assert script.release is not None
            await script.release.wait()
        return [
            failures.get(
                context.lead_id, DeliveryResult(remote_id=f"rec-{context.lead_id}", status_code=200)
            )
            for _, context in items
        ]

    def api_usage(self) -> ApiUsage | None:
        return self.script.usage


class NoReauthConnector(ScriptedConnector):
    async def reauthenticate(self) -> None:
        raise NotImplementedError


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


__all__ = [
    "AuthError",
    "DeliveryError",
    "FakeClock",
    "Script",
    "ScriptedConnector",
    "current_scripts",
    "install_scripts",
]
