"""``lead-bridge erase``: remove a person's data everywhere we keep it.

Leads, their deliveries and attempt records, quarantined bodies and stored
error texts go; each erased lead id is kept as a tombstone so the provider's
re-send is a duplicate. The command first counts what it would remove (the
preview), shows it, and asks before erasing (``--yes`` skips the question,
``--dry-run`` stops after the preview). On SQLite the freed pages are zeroed
(``secure_delete``) and the WAL is checkpointed, so the bytes leave the files
too. Records already handed to a destination (CRM, Slack, ...) must be erased
there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import textwrap
from collections.abc import Callable, Iterator

from bridge.cli.common import add_config_option, add_json_option, print_json
from bridge.logs import event
from bridge.store.base import EraseReport, Store

log = logging.getLogger("lead_bridge.erase")

# Lead ids listed in the text output; --json lists them all.
SHOWN_IDS = 20
WIDTH = 88


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "erase",
        help="remove a person's data (leads, deliveries, attempts, quarantine)",
        description="Remove every stored lead holding the e-mail address (exactly: "
        "joann@x.io is not ann@x.io) or the lead id, with its deliveries, attempt "
        "records, quarantined bodies and stored errors; erased ids are kept as "
        "tombstones so a re-send is a duplicate. Shows what it will remove and asks "
        "first. Data already delivered to destinations must be erased there.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  lead-bridge erase --email john@example.com --dry-run   # only count\n"
        "  lead-bridge erase --email john@example.com             # shows, then asks\n"
        "  lead-bridge erase --lead led_slp3mt0qxvIXYUIK --yes",
    )
    parser.add_argument("--email", metavar="ADDRESS", help="erase every lead with this e-mail")
    parser.add_argument("--lead", metavar="ID", help="erase the lead with this id")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--yes", "-y", action="store_true", help="erase without asking")
    mode.add_argument(
        "--dry-run", action="store_true", help="only count what would be erased; change nothing"
    )
    add_config_option(parser)
    add_json_option(parser)
    parser.set_defaults(func=run_erase)


def counts(report: EraseReport) -> str:
    return (
        f"{report.leads} lead(s), {report.deliveries} delivery record(s), "
        f"{report.attempts} attempt record(s),\n  {report.quarantine} quarantined item(s), "
        f"{report.errors_scrubbed} other lead(s)' error text quoting the address"
    )


def is_empty(report: EraseReport) -> bool:
    return not (
        report.leads
        or report.deliveries
        or report.attempts
        or report.quarantine
        or report.errors_scrubbed
    )


def id_lines(lead_ids: list[str], shown: int = SHOWN_IDS) -> list[str]:
    """The lead ids, wrapped, at most ``shown`` of them, then how many more."""
    if not lead_ids:
        return []
    text = ", ".join(lead_ids[:shown])
    lines = textwrap.wrap(text, WIDTH, initial_indent="lead ids: ", subsequent_indent="          ")
    if len(lead_ids) > shown:
        lines.append(f"          ... and {len(lead_ids) - shown} more (--json lists them all)")
    return lines


def describe(report: EraseReport, *, preview: bool = False) -> str:
    if is_empty(report):
        return "nothing to erase: no stored lead, quarantined body or error matched"
    verb = "would erase" if preview else "erased"
    lines = [f"{verb} {counts(report)}", *id_lines(report.lead_ids)]
    if not preview:
        lines.append("data already delivered to destinations must be erased there")
    return "\n".join(lines)


def confirm(prompt: str) -> bool | None:
    """Ask on the terminal; None when there is no terminal to ask on."""
    if not sys.stdin.isatty():
        return None
    try:
        answer = input(prompt)
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


@contextlib.contextmanager
def progress_bar(enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar on stderr while the erasure runs (on a terminal only),
    shown from the first update: after the confirmation question, not over it."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(
        TextColumn("erasing"),
        BarColumn(),
        MofNCompleteColumn(),
        console=Console(file=sys.stderr),
        transient=True,
    )
    task = bar.add_task("erase", total=None)

    def update(done: int, total: int) -> None:
        if not bar.live.is_started:
            bar.start()
        bar.update(task, completed=done, total=total)

    try:
        yield update
    finally:
        bar.stop()


async def _open_store(config_path: str | None) -> Store:
    from bridge.config_load import load_config
    from bridge.store import create_store

    # Lenient: erasure needs only the storage settings, not every connector secret.
    config, _warnings = load_config(config_path, lenient=True)
    store = create_store(config.storage)
    await store.open()
    return store


def _log(report: EraseReport, by: str) -> None:
    # Counts and lead ids only: the address itself is what is being erased.
    event(
        log,
        "erase",
        by=by,
        leads=report.leads,
        deliveries=report.deliveries,
        attempts=report.attempts,
        quarantine=report.quarantine,
        errors_scrubbed=report.errors_scrubbed,
        lead_ids=report.lead_ids[:20],
    )


async def erase(
    config_path: str | None,
    *,
    email: str | None,
    lead_id: str | None,
    approve: Callable[[EraseReport], bool],
    progress: Callable[[int, int], None] | None = None,
) -> tuple[EraseReport, bool]:
    """Preview, ask ``approve``, erase. Returns the report (the preview when
    nothing was erased) and whether the erasure ran."""
    store = await _open_store(config_path)
    try:
        preview = await store.erase_preview(email=email, lead_id=lead_id)
        if is_empty(preview):
            # Nothing (more) to erase: a run after one whose WAL checkpoint was
            # blocked still empties the WAL.
            preview.files_clean = await store.erase_finished()
            return preview, False
        if not approve(preview):
            return preview, False
        report = await store.erase(email=email, lead_id=lead_id, progress=progress)
        from bridge.cli.operator import cli_actor
        from bridge.operations import audit

        detail = {k: v for k, v in report.as_dict().items() if k != "lead_ids"}
        await audit.record(store, cli_actor(), "erase", lead_id or "by email", detail)
    finally:
        await store.close()
    _log(report, "email" if email else "lead")
    return report, True


def run_erase(args: argparse.Namespace) -> int:
    email = args.email.strip() if args.email else None
    lead_id = args.lead.strip() if args.lead else None
    if not email and not lead_id:
        print("lead-bridge erase: give --email ADDRESS or --lead ID", file=sys.stderr)
        return 2
    if email is not None and "@" not in email:
        # Not echoed: it may be someone's personal data all the same.
        print("lead-bridge erase: --email expects an e-mail address", file=sys.stderr)
        return 2
    refused: list[str] = []

    def approve(preview: EraseReport) -> bool:
        if args.dry_run:
            return False
        if args.yes:
            return True
        if not args.json:
            print(describe(preview, preview=True))
        answer = confirm("erase this? it cannot be undone [y/N] ")
        if answer is None:
            refused.append("no terminal to confirm on: run again with --yes (or --dry-run)")
        elif not answer:
            refused.append("not confirmed; nothing was erased")
        return bool(answer)

    with progress_bar(sys.stderr.isatty() and not args.json) as progress:
        report, erased = asyncio.run(
            erase(args.config, email=email, lead_id=lead_id, approve=approve, progress=progress)
        )
    if refused:
        print(f"lead-bridge erase: {refused[0]}", file=sys.stderr)
        return 1
    if args.json:
        dry_run = not erased and bool(args.dry_run)
        print_json({**report.as_dict(), "dry_run": dry_run, "files_clean": report.files_clean})
    else:
        print(describe(report, preview=not erased and not is_empty(report)))
    if not report.files_clean:
        print(
            "lead-bridge erase: the data was erased, but the WAL checkpoint stayed blocked "
            "(a long read?); the old bytes may remain in the -wal file until the next "
            "checkpoint: run the erase again",
            file=sys.stderr,
        )
        return 1
    return 0
