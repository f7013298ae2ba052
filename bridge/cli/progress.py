"""Progress bars for long CLI operations (bulk replay, erase), drawn by ``rich``.

Only on a terminal: when stderr is not a TTY (a pipe, a log file, CI) or the
command prints ``--json``, the bar is off and nothing extra is written.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Advance = Callable[[int], None]


def wanted(json_output: bool = False) -> bool:
    return not json_output and sys.stderr.isatty()


@contextmanager
def progress_bar(description: str, total: int, *, enabled: bool) -> Iterator[Advance]:
    """Yield ``advance(n)``; a bar on stderr while the block runs, when ``enabled``."""
    if not enabled or total <= 0:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)
