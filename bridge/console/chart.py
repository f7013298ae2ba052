"""A small bar chart as inline SVG: no script, no external file, readable
without colour (each bar has a <title> with its hour and count)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from markupsafe import Markup, escape

WIDTH, HEIGHT, GAP = 480, 96, 2


def bar_chart(buckets: Sequence[tuple[float, int]], label: str) -> Markup:
    """``buckets``: (bucket start as epoch seconds, count), oldest first."""
    if not buckets:
        return Markup("")
    peak = max(count for _, count in buckets) or 1
    bar = WIDTH / len(buckets)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT + 14}" role="img" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, (start, count) in enumerate(buckets):
        height = 0 if count == 0 else max(1.0, HEIGHT * count / peak)
        hour = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d %H:00 UTC")
        parts.append(
            f'<rect x="{i * bar + GAP / 2:.1f}" y="{HEIGHT - height:.1f}" '
            f'width="{max(bar - GAP, 1):.1f}" height="{height:.1f}">'
            f"<title>{escape(hour)}: {count}</title></rect>"
        )
    first = datetime.fromtimestamp(buckets[0][0], UTC).strftime("%H:00")
    last = datetime.fromtimestamp(buckets[-1][0], UTC).strftime("%H:00")
    parts.append(f'<text x="0" y="{HEIGHT + 12}">{first} UTC</text>')
    parts.append(f'<text x="{WIDTH}" y="{HEIGHT + 12}" text-anchor="end">{last}</text>')
    parts.append(f'<text x="{WIDTH}" y="10" text-anchor="end">max {peak}</text>')
    parts.append("</svg>")
    # Every interpolated text above is escaped or a number.
    return Markup("".join(parts))  # noqa: S704
