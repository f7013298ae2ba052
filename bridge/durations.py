"""Durations in config and settings: ``30``, ``"30s"``, ``"5m"``, ``"2h"``, ``"3d"``, ``"250ms"``.

A small module of its own so that connector settings can use :data:`Duration`
without importing the whole configuration model (:mod:`bridge.config`, which
re-exports both names).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> Any:
    """``5``, ``"5s"``, ``"5m"``, ``"2h"``, ``"3d"``, ``"250ms"`` -> seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30, '30s', '5m', '2h' or '3d'")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2)]
    raise ValueError("expected a duration such as 30, '30s', '5m', '2h' or '3d'")


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
