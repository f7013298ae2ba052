"""``lead-bridge map``: a dry run of routing and mapping for sample leads.

It loads the config leniently (unset secrets are warnings, and values are never
printed), so it runs in a user's CI against sample leads. Exit status: 0 when
every lead maps for every destination it is routed to, 1 when any lead would be
quarantined by intake (its element rules come first) or any mapping fails, 2 for
a bad config or a malformed lead file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bridge.cli.common import add_config_option, add_json_option, print_json
from bridge.operations.mapping import evaluate

__all__ = ["evaluate", "read_leads", "register"]


class LeadFileError(Exception):
    """The --lead file cannot be read as leads."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "map",
        help="show how sample leads are routed and mapped (a dry run; sends nothing)",
        description="Show, for each destination, whether `when` matches each lead and the "
        "record it would receive (or the mapping error). A lead intake would quarantine "
        "(no string id, data not an object, ...) is reported as such. Exit status 1 if any "
        "lead is quarantined or fails any mapping, 2 for a bad config or lead file. "
        "Secrets need not be set.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  lead-bridge map --lead tests/fixtures/seed_lead.json\n"
        "  lead-bridge map --lead webhook-body.json --json\n"
        "  curl -s https://example.com/sample-leads.json | lead-bridge map --lead -",
    )
    add_config_option(parser)
    parser.add_argument(
        "--lead",
        required=True,
        metavar="FILE",
        help="JSON file holding one lead or a webhook array of leads; - reads stdin",
    )
    add_json_option(parser)
    parser.set_defaults(func=run)


def read_leads(source: str) -> list[dict[str, Any]]:
    name = "stdin" if source == "-" else source
    try:
        raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise LeadFileError(f"cannot read lead file {name}: {exc.strerror}") from None
    try:
        parsed = json.loads(raw)
    except UnicodeDecodeError:
        raise LeadFileError(f"{name}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise LeadFileError(
            f"{name}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    leads = parsed if isinstance(parsed, list) else [parsed]
    for index, lead in enumerate(leads):
        if not isinstance(lead, dict):
            where = f"item {index}" if isinstance(parsed, list) else "the top level"
            raise LeadFileError(
                f"{name}: {where} is {type(lead).__name__}, expected a lead object "
                '({"id": ..., "data": {...}}) or an array of them'
            )
    return leads


def _print_text(report: dict[str, Any]) -> None:
    for warning in report["warnings"]:
        print(f"warning: {warning['path']}: {warning['message']}", file=sys.stderr)
    if not report["leads"]:
        print("no leads in the file (an empty webhook array)")
    for lead in report["leads"]:
        print(f"lead {lead['id'] or '#' + str(lead['index'])}")
        if "quarantined" in lead:
            print(
                f"  QUARANTINED by intake: {lead['quarantined']} "
                "(stored for inspection, sent to no destination)"
            )
            continue
        if not lead["destinations"]:
            print("  no destinations configured")
        for result in lead["destinations"]:
            label = f"  {result['name']} ({result['type']})"
            if not result["enabled"]:
                label += " [disabled]"
            if not result["matched"]:
                print(f"{label}: skipped, `when` did not match")
            elif "error" in result:
                print(f"{label}: MAPPING FAILED: {result['error']['message']}")
            else:
                print(f"{label}: matched")
                body = json.dumps(result["record"], indent=2, ensure_ascii=False, default=str)
                print("\n".join("    " + line for line in body.splitlines()))
                if result["unmapped_keys"]:
                    print(f"    unmapped data keys: {', '.join(result['unmapped_keys'])}")
        if lead["unrouted"]:
            print(
                "  unrouted: no enabled destination matched (the lead would be kept and reported)"
            )


def run(args: argparse.Namespace) -> int:
    from bridge.destinations import load_runtime

    try:
        leads = read_leads(args.lead)
    except LeadFileError as exc:
        print(f"lead-bridge map: {exc}", file=sys.stderr)
        return 2
    runtime = load_runtime(args.config, lenient=True)
    report = evaluate(runtime, leads)
    if args.json:
        print_json(report)
    else:
        _print_text(report)
    return 0 if report["ok"] else 1
