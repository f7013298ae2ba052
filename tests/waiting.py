"""Waiting for a state in tests: poll a condition until a generous deadline.

A test must wait for the state it needs, never sleep a guessed time: on a busy
2-core machine anything can take ten times longer than on an idle one. The
deadline is only ever reached when something is wrong, so it can be long.
``LEAD_BRIDGE_TEST_DEADLINE`` (seconds) overrides it.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import time
from collections.abc import Awaitable, Callable

DEADLINE = float(os.environ.get("LEAD_BRIDGE_TEST_DEADLINE", "120"))


def wait_until(
    condition: Callable[[], bool], what: str, timeout: float = DEADLINE, interval: float = 0.02
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]],
    what: str,
    timeout: float = DEADLINE,
    interval: float = 0.01,
) -> None:
    """The async form; ``condition`` may be a coroutine function."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)
