"""Test helpers: compile one rule and map one value through it."""

from __future__ import annotations

from typing import Any

from bridge.mapping import compile_mapping

MISSING: Any = object()  # the source key is absent from the lead


def map_value(rule: Any, value: Any = MISSING, **data: Any) -> Any:
    """Map ``data.x = value`` through ``out: rule``; the result, or MISSING when omitted."""
    if value is not MISSING:
        data["x"] = value
    compiled = compile_mapping({"out": rule}, unmapped="ignore", path="mapping")
    record = compiled.apply({"id": "led_1", "data": data}).record
    return record.get("out", MISSING)
