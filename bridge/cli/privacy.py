"""``lead-bridge erase``: remove a person's data everywhere we keep it.

Leads, their deliveries and attempt records, quarantined bodies and stored
error texts go. On SQLite the freed pages are zeroed (``secure_delete``) and the
WAL is checkpointed, so the bytes leave the files too. Records already handed
to a destination (CRM, Slack, ...) must be erased there.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from bridge.cli.common import add_config_option, add_json_option, print_json
from bridge.logs import event
from bridge.store.base import EraseReport

log = logging.getLogger("lead_bridge.erase")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "erase",
        help="remove a person's data (leads, deliveries, attempts, quarantine)",
        description="Remove every stored lead holding the e-mail address (or the lead id), "
        "with its deliveries, attempt records, quarantined bodies and stored errors. "
        "Data already delivered to destinations must be erased there.",
    )
    parser.add_argument("--email", metavar="ADDRESS", help="erase every lead with this e-mail")
    parser.add_argument("--lead", metavar="ID", help="erase the lead with this id")
    add_config_option(parser)
    add_json_option(parser)
    parser.set_defaults(func=run_erase)


async def erase(config_path: str | None, *, email: str | None, lead_id: str | None) -> EraseReport:
    from bridge.config import load_config
    from bridge.store import create_store

    # Lenient: erasure needs only the storage settings, not every connector secret.
    config, _warnings = load_config(config_path, lenient=True)
    store = create_store(config.storage)
    await store.open()
    try:
        report = await store.erase(email=email, lead_id=lead_id)
    finally:
        await store.close()
    # Log counts and lead ids only: the address itself is what is being erased.
    event(
        log,
        "erase",
        by="email" if email else "lead",
        leads=report.leads,
        deliveries=report.deliveries,
        attempts=report.attempts,
        quarantine=report.quarantine,
        lead_ids=report.lead_ids[:20],
    )
    return report


def describe(report: EraseReport) -> str:
    if not (report.leads or report.deliveries or report.attempts or report.quarantine):
        return "nothing to erase: no stored lead, quarantined body or error matched"
    lines = [
        f"erased {report.leads} lead(s), {report.deliveries} delivery record(s), "
        f"{report.attempts} attempt record(s), {report.quarantine} quarantined item(s)"
    ]
    if report.lead_ids:
        lines.append("lead ids: " + ", ".join(report.lead_ids))
    lines.append("data already delivered to destinations must be erased there")
    return "\n".join(lines)


def run_erase(args: argparse.Namespace) -> int:
    email = args.email.strip() if args.email else None
    lead_id = args.lead.strip() if args.lead else None
    if not email and not lead_id:
        print("lead-bridge erase: give --email ADDRESS or --lead ID", file=sys.stderr)
        return 2
    if email is not None and "@" not in email:
        print(f"lead-bridge erase: --email {email!r} is not an e-mail address", file=sys.stderr)
        return 2
    report = asyncio.run(erase(args.config, email=email, lead_id=lead_id))
    if args.json:
        print_json(
            {
                "leads": report.leads,
                "deliveries": report.deliveries,
                "attempts": report.attempts,
                "quarantine": report.quarantine,
                "lead_ids": report.lead_ids,
            }
        )
    else:
        print(describe(report))
    return 0
