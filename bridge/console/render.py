"""Templates (Jinja2, autoescaped) and how personal data is shown: masked,
revealed by a click (``<details>``, so it works without JavaScript)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from bridge.logs import redact
from bridge.personal import is_personal

TEMPLATES = Path(__file__).parent / "templates"


def mask(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if not text:
        return ""
    masked = redact(text)
    return masked if masked != text else "•" * min(len(text), 8)


def flatten(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(path, leaf value) pairs in the mapping rules' path syntax (``data.items[0].name``)."""
    if isinstance(node, dict):
        if not node and prefix:
            yield prefix, node
        for key, value in node.items():
            yield from flatten(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, list) and node:
        for index, value in enumerate(node):
            yield from flatten(value, f"{prefix}[{index}]")
    else:
        yield prefix, node


def fields(node: Any) -> list[dict[str, Any]]:
    """Rows for a field table: path, shown text, and whether it is masked."""
    rows = []
    for path, value in flatten(node):
        last = re.split(r"[.\[]", path)[-1].rstrip("]")
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        rows.append(
            {
                "path": path,
                "text": text,
                "masked": mask(value) if is_personal(last, value) else None,
            }
        )
    return rows


def when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def ago(ts: float | None) -> str:
    return "" if ts is None else age(time.time() - ts) + " ago"


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, age=age, ago=ago, pretty=pretty, fields=fields)
    env.globals["Markup"] = Markup
    return env
