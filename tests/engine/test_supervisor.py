"""The engine supervises each worker's loop."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from tests.engine.harness import (
    Harness,
    dest,
    script,
)
from tests.waiting import eventually


async def test_a_crashed_worker_loop_is_restarted_and_shown_down_meanwhile(
    make_harness: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    # Issue 12 item 6: an exception other than a StoreError ended the loop silently.
    script("crm")
    h: Harness = await make_harness(dest("crm"))
    claim = h.store.claim
    failing = True

    async def broken_claim(**kw: Any) -> Any:
        if failing:
            raise OSError(24, "Too many open files")
        return await claim(**kw)

    h.store.claim = broken_claim  # type: ignore[method-assign]
    engine = h.engine()
    with caplog.at_level(logging.ERROR, logger="lead_bridge.engine"):
        await engine.start()
        await h.add("led_1")
        await eventually(lambda: engine.workers_down() == ["crm"], "the worker shown down")
        assert h.metrics.workers_down() == ["crm"]
        assert engine.destination_states()["crm"]["worker_running"] is False
        await eventually(lambda: engine.workers[0].restarts >= 2, "restarts with backoff")
        failing = False
        assert (await h.settle("led_1", "crm")).status == "delivered"
    assert engine.workers_down() == [] and h.metrics.workers_down() == []
    assert engine.worker_running("crm")
    restarts = h.metrics.worker_restarts.labels("crm")._value.get()  # type: ignore[attr-defined]
    assert restarts == engine.workers[0].restarts >= 2
    assert "event=worker_crashed destination=crm error=OSError errno=24" in caplog.text
