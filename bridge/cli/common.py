"""Helpers shared by the subcommands: the --config option, tables, times, JSON."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        metavar="PATH",
        default=None,
        help="configuration file, e.g. /etc/lead-bridge/config.yaml (default: $LEAD_BRIDGE_CONFIG)",
    )


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="machine-readable output (times in ISO 8601 UTC)"
    )


def print_json(value: Any) -> None:
    """Times (``*_at`` keys holding epoch seconds) as ISO 8601 UTC, as the admin API."""
    json.dump(_iso_times(value), sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


def _iso_times(value: Any) -> Any:
    from bridge.timestamps import iso_utc

    if isinstance(value, dict):
        return {
            key: iso_utc(item)
            if isinstance(key, str)
            and key.endswith("_at")
            and isinstance(item, int | float)
            and not isinstance(item, bool)
            else _iso_times(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_iso_times(item) for item in value]
    return value


def relative(ts: float | None, now: float | None = None) -> str:
    """``12s ago`` / ``in 5m`` / ``-``."""
    if ts is None:
        return "-"
    now = time.time() if now is None else now
    delta = ts - now
    text = duration(abs(delta))
    return f"in {text}" if delta > 0.5 else f"{text} ago"


def duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def iso(ts: float | None) -> str | None:
    """For tables: to the second, UTC."""
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def parse_since(text: str) -> float:
    """``30m``, ``1h``, ``2d`` -> an absolute epoch time that far back."""
    from bridge.config import parse_duration

    try:
        return time.time() - float(parse_duration(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration like 30m, 1h or 2d, got {text!r}"
        ) from None
