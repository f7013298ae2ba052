"""Operator commands that read the store directly: status, deliveries, show, replay."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import asdict
from typing import Any, TypeVar

from bridge.cli.common import (
    add_command,
    duration,
    load_runtime_for,
    parse_since,
    print_json,
    relative,
    shorten,
    table,
    with_store,
)
from bridge.cli.show import cmd_show
from bridge.destinations import Runtime
from bridge.models import STATUSES
from bridge.store.base import Store

T = TypeVar("T")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    add_command(
        sub,
        "status",
        cmd_status,
        help="deliveries per destination and status, oldest pending, dead",
        epilog="examples:\n  lead-bridge status --config /etc/lead-bridge/config.yaml\n"
        "  lead-bridge status --json | jq '.destinations[] | {destination, counts}'",
    )

    d = add_command(
        sub,
        "deliveries",
        cmd_deliveries,
        help="list deliveries, newest first",
        epilog="examples:\n"
        "  lead-bridge deliveries --status dead --since 1d\n"
        "  lead-bridge deliveries --destination crm --limit 200\n"
        "  lead-bridge deliveries --status pending --page 2\n"
        "  lead-bridge deliveries --json | jq '.[].lead_id'",
    )
    d.add_argument(
        "--status", choices=STATUSES, help="only deliveries in this status, e.g. --status dead"
    )
    d.add_argument("--destination", "-d", metavar="NAME", help="only this destination, e.g. -d crm")
    d.add_argument(
        "--since",
        type=parse_since,
        metavar="AGE",
        help="only those updated within AGE: 30m, 1h, 2d",
    )
    d.add_argument("--limit", type=int, default=50, metavar="N", help="rows per page (default 50)")
    d.add_argument(
        "--page", type=int, default=1, metavar="P", help="which page of --limit rows (default 1)"
    )

    s = add_command(
        sub,
        "show",
        cmd_show,
        help="a lead, its mapped record per destination, every attempt",
        epilog="examples:\n  lead-bridge show led_slp3mt0qxvIXYUIK\n"
        "  lead-bridge show led_slp3mt0qxvIXYUIK --json",
    )
    s.add_argument("lead_id", metavar="LEAD_ID", help="the lead's id, as the provider sent it")

    r = add_command(
        sub,
        "replay",
        cmd_replay,
        help="deliver again (after fixing a mapping or credentials)",
        description="Make a lead's deliveries due again, or every dead delivery. "
        "`--dead` first shows how many it would requeue per destination and asks; "
        "a running lead-bridge picks them up at its next poll.",
        epilog="examples:\n"
        "  lead-bridge replay led_slp3mt0qxvIXYUIK            # its dead or pending deliveries\n"
        "  lead-bridge replay led_slp3mt0qxvIXYUIK -d crm --force   # send a delivered one again\n"
        "  lead-bridge replay --dead --dry-run               # only count\n"
        "  lead-bridge replay --dead --destination crm       # preview, then asks\n"
        "  lead-bridge replay --dead --yes                   # no question (scripts)",
    )
    r.add_argument("lead_id", nargs="?", metavar="LEAD_ID", help="the lead to deliver again")
    r.add_argument(
        "--dead", action="store_true", help="every dead delivery (of --destination, if given)"
    )
    r.add_argument("--destination", "-d", metavar="NAME", help="only this destination, e.g. -d crm")
    r.add_argument(
        "--force", action="store_true", help="with LEAD_ID: also deliveries already delivered"
    )
    r.add_argument(
        "--yes", "-y", action="store_true", help="with --dead: do not ask for confirmation"
    )
    r.add_argument(
        "--dry-run",
        action="store_true",
        help="with --dead: print what would be requeued, change nothing",
    )


# --------------------------------------------------------------------------- status


def cmd_status(args: argparse.Namespace) -> int:
    runtime = load_runtime_for(args)
    now = time.time()
    status = with_store(runtime, lambda s: s.status(now))
    if args.json:
        print_json(
            {
                **asdict(status),
                "destinations": [
                    {
                        **asdict(d),
                        "oldest_pending_age_seconds": None
                        if d.oldest_pending_at is None
                        else round(now - d.oldest_pending_at, 3),
                    }
                    for d in status.destinations
                ],
            }
        )
        return 0
    rows = []
    configured = {d.name for d in runtime.destinations}
    for d in status.destinations:
        name = d.destination if d.destination in configured else f"{d.destination} (not configured)"
        oldest = "-" if d.oldest_pending_at is None else duration(now - d.oldest_pending_at)
        rows.append(
            [
                name,
                d.counts.get("pending", 0),
                d.in_flight,
                d.counts.get("delivered", 0),
                d.counts.get("dead", 0),
                d.counts.get("skipped", 0),
                oldest,
            ]
        )
    for name in sorted(configured - {d.destination for d in status.destinations}):
        rows.append([name, 0, 0, 0, 0, 0, "-"])
    print(
        f"leads: {status.leads}   quarantined: {status.quarantined}   "
        f"undelivered: {status.undelivered}   unrouted: {status.unrouted}"
    )
    print()
    print(
        table(
            [
                "destination",
                "pending",
                "in flight",
                "delivered",
                "dead",
                "skipped",
                "oldest pending",
            ],
            rows,
        )
    )
    dead = sum(d.counts.get("dead", 0) for d in status.destinations)
    if dead:
        print(
            f"\n{dead} dead deliveries: `lead-bridge deliveries --status dead`, then "
            "`lead-bridge replay --dead` once the cause is fixed"
        )
    return 0


# --------------------------------------------------------------------------- deliveries


def cmd_deliveries(args: argparse.Namespace) -> int:
    runtime = load_runtime_for(args)
    if args.limit < 1 or args.page < 1:
        print("lead-bridge deliveries: --limit and --page start at 1", file=sys.stderr)
        return 2
    skip = (args.page - 1) * args.limit

    async def page(store: Store) -> tuple[list[Any], int]:
        rows = await store.list_deliveries(
            status=args.status,
            destination=args.destination,
            since=args.since,
            limit=skip + args.limit,
        )
        return rows[skip:], await _count_deliveries(store, args)

    rows, total = with_store(runtime, page)
    if args.json:
        print_json([asdict(r) for r in rows])
        return 0
    if not rows:
        print("no deliveries match" if not total else f"page {args.page} is empty: {total} match")
        return 0
    now = time.time()
    print(
        table(
            ["lead", "destination", "status", "attempts", "updated", "next attempt", "last error"],
            [
                [
                    r.lead_id,
                    r.destination,
                    "pending (in flight)" if r.leased else r.status,
                    r.attempts,
                    relative(r.updated_at, now),
                    relative(r.next_attempt_at, now) if r.status == "pending" else "-",
                    shorten(r.last_error),
                ]
                for r in rows
            ],
        )
    )
    if skip + len(rows) < total or skip:
        more = f", --page {args.page + 1} for the next" if skip + len(rows) < total else ""
        print(
            f"\nshowing {skip + 1}-{skip + len(rows)} of {total} (newest first); "
            f"use --limit N for more per page{more}"
        )
    return 0


async def _count_deliveries(store: Store, args: argparse.Namespace) -> int:
    where, params = ["1 = 1"], []  # type: tuple[list[str], list[Any]]
    if args.status:
        where.append("status = ?")
        params.append(args.status)
    if args.destination:
        where.append("destination = ?")
        params.append(args.destination)
    if args.since is not None:
        where.append("updated_at >= ?")
        params.append(args.since)
    sql = f"SELECT count(*) FROM deliveries WHERE {' AND '.join(where)}"  # noqa: S608
    ((count,),) = await store.fetch(sql, params)
    return int(count)


# --------------------------------------------------------------------------- replay


def cmd_replay(args: argparse.Namespace) -> int:
    if not args.lead_id and not args.dead:
        print("lead-bridge replay: give a LEAD_ID or --dead", file=sys.stderr)
        return 2
    runtime = load_runtime_for(args)
    if args.destination and runtime.destination(args.destination) is None:
        known = ", ".join(d.name for d in runtime.destinations) or "none"
        print(
            f"lead-bridge replay: no destination named {args.destination!r} (configured: {known})",
            file=sys.stderr,
        )
        return 2
    if args.dead and not args.lead_id:
        return _replay_dead(args, runtime)
    if args.yes or args.dry_run:
        print("lead-bridge replay: --yes and --dry-run go with --dead", file=sys.stderr)
        return 2

    async def requeue(store: Store) -> Any:
        from bridge.cli.operator import cli_actor
        from bridge.operations import audit

        result = await store.requeue(
            now=time.time(),
            configured=[d.name for d in runtime.active],
            lead_id=args.lead_id or None,
            destination=args.destination,
            dead_only=args.dead,
            force=args.force,
        )
        detail = {"dead": args.dead, "force": args.force, "requeued": result.requeued}
        target = args.lead_id or args.destination
        await audit.record(store, cli_actor(), "replay", target, detail)
        return result

    result = with_store(runtime, requeue)
    if args.json:
        print_json(asdict(result))
    else:
        print(f"requeued {result.requeued} deliver{'y' if result.requeued == 1 else 'ies'}")
        if result.refused_delivered:
            print(
                f"{result.refused_delivered} already delivered: not requeued "
                "(use --force to send them again)"
            )
    if result.not_found and args.lead_id:
        print(f"no deliveries found for lead {args.lead_id!r}", file=sys.stderr)
        return 1
    if result.refused_delivered and not result.requeued:
        return 1
    return 0


def _replay_dead(args: argparse.Namespace, runtime: Runtime) -> int:
    """``replay --dead``: preview per destination, confirm, requeue in chunks."""
    from bridge.cli.operator import cli_actor
    from bridge.cli.progress import progress_bar, wanted
    from bridge.errors import LeadBridgeError
    from bridge.operations.dead_letters import (
        DeadLetterQuery,
        preview_replay,
        replay_dead_letters,
    )

    query = DeadLetterQuery(destination=args.destination)

    async def run(store: Store) -> dict[str, Any]:
        preview = await preview_replay(store, query)
        out: dict[str, Any] = {
            "requeued": 0,
            "would_requeue": preview.count,
            "by_destination": preview.by_destination,
        }
        if preview.count == 0 or args.dry_run:
            return out
        per = ", ".join(f"{name} {count}" for name, count in preview.by_destination.items())
        if not args.yes:
            if args.json or not sys.stdin.isatty():
                raise LeadBridgeError(
                    f"replay --dead would requeue {preview.count} dead "
                    f"deliver{'y' if preview.count == 1 else 'ies'} ({per}): confirm with "
                    "--yes, or only count with --dry-run (not asking: not a terminal)"
                )
            sys.stderr.write(
                f"requeue {preview.count} dead deliver{'y' if preview.count == 1 else 'ies'} "
                f"({per})? [y/N] "
            )
            sys.stderr.flush()
            answer = await asyncio.to_thread(sys.stdin.readline)
            if answer.strip().lower() not in ("y", "yes"):
                out["cancelled"] = True
                return out
        with progress_bar("requeueing", preview.count, enabled=wanted(args.json)) as advance:
            out["requeued"] = await replay_dead_letters(
                store, query, actor=cli_actor(), as_of=preview.as_of, progress=advance
            )
        return out

    result = with_store(runtime, run)
    if args.json:
        print_json({**result, "dry_run": args.dry_run})
        return 0
    count = result["would_requeue"]
    per = ", ".join(f"{name} {n}" for name, n in result["by_destination"].items())
    if count == 0:
        print("nothing dead: 0 requeued")
    elif args.dry_run:
        print(
            f"would requeue {count} dead deliver{'y' if count == 1 else 'ies'} ({per}); "
            "nothing changed (--dry-run)"
        )
    elif result.get("cancelled"):
        print("cancelled: 0 requeued")
    else:
        requeued = result["requeued"]
        print(
            f"requeued {requeued} deliver{'y' if requeued == 1 else 'ies'} ({per}); "
            "a running lead-bridge picks them up at its next poll"
        )
    return 0
