"""The engine tests' harness fixture (no real backoff sleeps: the clock is injected)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bridge.destinations import Runtime
from bridge.store.sqlite import SQLiteStore
from tests.engine.harness import (
    Harness,
)
from tests.fakes import FakeClock, Script


@pytest.fixture
async def make_harness(
    make_runtime: Callable[..., Runtime], scripts: dict[str, Script]
) -> AsyncIterator[Callable[..., Any]]:
    harnesses: list[Harness] = []

    async def make(*destinations: dict[str, Any], worker: dict[str, Any] | None = None) -> Harness:
        runtime = make_runtime(
            destinations=list(destinations),
            worker={"poll_interval": "10ms", "lease": "60s", **(worker or {})},
        )
        store = SQLiteStore(runtime.config.storage.url)
        await store.open()
        clock = FakeClock()
        for d in destinations:
            if "script" in d["settings"]:
                scripts.setdefault(d["settings"]["script"], Script()).clock = clock
        harness = Harness(runtime, store, clock)
        harnesses.append(harness)
        return harness

    yield make
    for h in harnesses:
        for engine in h.engines:
            if not engine.stopping:
                await engine.stop(2)
        await h.store.close()
