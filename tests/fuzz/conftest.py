"""Fuzz suites: bounded, derandomized example counts for CI; a longer run is

    LEAD_BRIDGE_FUZZ_EXAMPLES=5000 pytest tests/fuzz -q

Each suite counts the examples it ran and the session summary prints them, so
the CI log shows how much fuzzing happened.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest
from hypothesis import HealthCheck, settings


def examples(default: int) -> int:
    """Examples per fuzz test (per operation for the admin API): the suite's
    CI-sized default, or LEAD_BRIDGE_FUZZ_EXAMPLES for a longer run."""
    return int(os.environ.get("LEAD_BRIDGE_FUZZ_EXAMPLES", default))


def fuzz(default: int) -> settings:
    # Derandomized: the same examples on every run, so CI is reproducible; no
    # deadline: a busy 2-core machine is slow, not wrong.
    return settings(
        max_examples=examples(default),
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


RAN: Counter[str] = Counter()


def count(name: str) -> None:
    RAN[name] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not RAN:
        return
    terminalreporter.section("fuzz examples run")
    for name, examples in sorted(RAN.items()):
        terminalreporter.write_line(f"{name}: {examples} examples")
    terminalreporter.write_line("(set LEAD_BRIDGE_FUZZ_EXAMPLES=N for a longer run)")
