"""Helpers shared by the subcommands: the --config option, tables, times, JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from bridge.destinations import Runtime
    from bridge.store.base import Store

T = TypeVar("T")


def add_command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    func: Callable[[argparse.Namespace], int],
    **kwargs: Any,
) -> argparse.ArgumentParser:
    """A subcommand reading the configuration, with --json output: help,
    description and epilog (examples, printed as written) in ``kwargs``."""
    parser = sub.add_parser(name, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
    add_config_option(parser)
    add_json_option(parser)
    parser.set_defaults(func=func)
    return parser


def load_runtime_for(args: argparse.Namespace, *, strict: bool = False) -> Runtime:
    """The configuration of ``--config``. Lenient unless ``strict``: reading the
    store works without the destinations' secrets at hand; sending does not."""
    from bridge.destinations import load_runtime

    return load_runtime(args.config, lenient=not strict)


def with_store(runtime: Runtime, fn: Callable[[Store], Awaitable[T]]) -> T:
    """``fn(store)`` on the configured store, opened for the call and closed after."""
    from bridge.store import create_store

    async def run() -> T:
        store = create_store(runtime.config.storage)
        await store.open()
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(run())


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


def shorten(text: str | None, width: int = 70) -> str:
    """On one line, cut to ``width`` characters; ``-`` for nothing."""
    if not text:
        return "-"
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


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
