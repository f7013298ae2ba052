"""One timestamp format for every machine-readable output.

The admin API, the CLI's ``--json`` and the log lines all write times as
ISO 8601 in UTC with milliseconds and a ``Z``: ``2024-05-01T12:00:00.123Z``.
"""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(ts: float | None) -> str | None:
    """Epoch seconds as ``2024-05-01T12:00:00.123Z``; None stays None."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
