"""Source paths into a lead: ``id``, ``data.email``, ``data.items[0].name``.

A path that leads nowhere (a missing key, an index past the end, a key looked up
in a string) is simply empty: leads change shape over time and a missing field is
never an error by itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# A key is anything but the separators; an index is [N].
_SEGMENT_RE = re.compile(r"([^.\[\]{}\s]+)((?:\[\d+\])*)")
_INDEX_RE = re.compile(r"\[(\d+)\]")


@dataclass(frozen=True)
class Path:
    text: str
    parts: tuple[str | int, ...]

    def get(self, lead: Any) -> Any:
        current = lead
        for part in self.parts:
            if isinstance(part, int):
                if not isinstance(current, list) or part >= len(current):
                    return None
                current = current[part]
            else:
                if not isinstance(current, Mapping):
                    return None
                current = current.get(part)
            if current is None:
                return None
        return current

    @property
    def data_key(self) -> str | None:
        """The ``data`` key this path reads (for unmapped-key accounting)."""
        if len(self.parts) >= 2 and self.parts[0] == "data" and isinstance(self.parts[1], str):
            return self.parts[1]
        return None

    @property
    def reads_all_data(self) -> bool:
        return self.parts == ("data",)


def parse_path(text: Any) -> Path:
    """Parse ``data.email``; raises ValueError with a message fit for a config error."""
    if not isinstance(text, str):
        raise ValueError(f"expected a source path such as data.email, got {type(text).__name__}")
    if not text:
        raise ValueError("empty source path; expected e.g. data.email")
    parts: list[str | int] = []
    for segment in text.split("."):
        match = _SEGMENT_RE.fullmatch(segment)
        if match is None:
            raise ValueError(
                f"malformed source path {text!r}; expected dot-separated keys with optional "
                "[N] indexes, e.g. data.email or data.items[0].name"
            )
        parts.append(match.group(1))
        parts.extend(int(i) for i in _INDEX_RE.findall(match.group(2)))
    return Path(text, tuple(parts))


def is_empty(value: Any) -> bool:
    """None, blank text, [] and {} are empty; 0 and false are values."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list | dict):
        return not value
    return False
