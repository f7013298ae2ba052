"""Operator commands on the bridge/operations functions (the admin API and the
console use the same ones): search, dead-letters (with preview and bulk
replay), overview, drift, check-credentials, test-send, audit."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, TypeVar

from bridge.cli.common import (
    add_command,
    duration,
    iso,
    load_runtime_for,
    print_json,
    relative,
    table,
    with_store,
)
from bridge.errors import LeadBridgeError

if TYPE_CHECKING:
    from bridge.store.base import Store

T = TypeVar("T")


def _time(text: str) -> float:
    """``30m`` / ``2d`` ago, or an ISO 8601 time with its UTC offset."""
    from bridge.admin.http import BadRequest, parse_since

    try:
        return parse_since(text, time.time())
    except BadRequest as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("since: ")) from None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from bridge.operations.dead_letters import ERROR_CLASSES
    from bridge.operations.search import SEARCH_STATUSES

    s = add_command(
        sub,
        "search",
        cmd_search,
        help="find leads by id, email, phone, time, delivery status, destination",
        epilog="examples:\n"
        "  lead-bridge search --email john@example.com\n"
        "  lead-bridge search --phone '+1 555 0100' --status dead\n"
        "  lead-bridge search --from 2d --to 1d --destination salesforce --limit 100\n"
        "Emails and phones are looked up through a keyed-hash index (no payload scan);\n"
        "phones match on their digits. Pass --cursor from the previous page for more.",
    )
    s.add_argument("--lead-id", metavar="ID", help="exactly this lead id")
    s.add_argument("--email", metavar="ADDRESS", help="leads with this e-mail (exact, any case)")
    s.add_argument("--phone", metavar="NUMBER", help="leads with this phone (digits compared)")
    s.add_argument(
        "--from",
        dest="received_from",
        type=_time,
        metavar="WHEN",
        help="received since: 30m, 2h, 1d ago or an ISO 8601 time",
    )
    s.add_argument(
        "--to", dest="received_to", type=_time, metavar="WHEN", help="received before (same forms)"
    )
    s.add_argument("--status", choices=SEARCH_STATUSES, help="any delivery of the lead is")
    s.add_argument("--destination", metavar="NAME", help="has a delivery to NAME")
    s.add_argument("--limit", type=int, default=50, help="leads per page (default 50)")
    s.add_argument("--cursor", help="next_cursor printed by the previous page")

    d = add_command(
        sub,
        "dead-letters",
        cmd_dead_letters,
        help="list dead letters by destination, error class, time; preview and bulk replay",
        epilog="examples:\n"
        "  lead-bridge dead-letters --destination salesforce --error-class auth\n"
        "  lead-bridge dead-letters --since 1d --replay          # preview, then asks\n"
        "  lead-bridge dead-letters --destination hubspot --replay --yes\n"
        "  lead-bridge dead-letters --id 812 --id 813 --replay --yes\n"
        "The replay requeues what the preview counted (dead letters that die later are\n"
        "left alone); attempts are kept and max_age starts over. It is audited.",
    )
    d.add_argument("--destination", metavar="NAME", help="only this destination")
    d.add_argument("--error-class", choices=ERROR_CLASSES, help="only this kind of failure")
    d.add_argument("--since", type=_time, metavar="WHEN", help="died since: 2h, 1d, ISO time")
    d.add_argument("--until", type=_time, metavar="WHEN", help="died before")
    d.add_argument(
        "--id",
        dest="ids",
        type=int,
        action="append",
        metavar="DELIVERY_ID",
        help="only these deliveries (repeat); with --replay",
    )
    d.add_argument("--limit", type=int, default=50, help="rows listed (default 50)")
    d.add_argument("--replay", action="store_true", help="requeue the matching dead letters")
    d.add_argument("--yes", action="store_true", help="with --replay: do not ask")

    add_command(
        sub,
        "overview",
        cmd_overview,
        help="per-destination health, unrouted leads, schema drift",
        epilog="examples:\n  lead-bridge overview\n  lead-bridge overview --json",
    )

    add_command(
        sub,
        "drift",
        cmd_drift,
        help="provider data keys that no destination's mapping reads",
        epilog="examples:\n  lead-bridge drift\n  lead-bridge drift --json",
    )

    c = add_command(
        sub,
        "check-credentials",
        cmd_check,
        help="check each destination's credentials and reachability (no lead is sent)",
        epilog="examples:\n  lead-bridge check-credentials\n  lead-bridge check-credentials crm\n"
        "Exit status 1 when a check fails.",
    )
    c.add_argument(
        "names", nargs="*", metavar="DESTINATION", help="only these destinations (default: all)"
    )

    t = add_command(
        sub,
        "test-send",
        cmd_test_send,
        help="send a synthetic test lead (lb-test-…, test: true) to one destination",
        epilog="example:\n  lead-bridge test-send slack\n"
        "The test lead is sent once, never stored nor counted; the send is audited.",
    )
    t.add_argument("name", metavar="DESTINATION", help="the destination to send the test lead to")

    a = add_command(
        sub,
        "audit",
        cmd_audit,
        help="who replayed, erased or test-sent what, and when",
        epilog="examples:\n  lead-bridge audit --limit 20\n  lead-bridge audit --action erase --json",
    )
    a.add_argument(
        "--limit", type=int, default=50, help="entries listed, newest first (default 50)"
    )
    a.add_argument("--action", help="only this action (replay, bulk_replay, erase, test_send)")


def cli_actor() -> str:
    """Who, in the audit log, for a CLI command: the operating-system user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def _bad(exc: Exception) -> int:
    print(f"lead-bridge: {exc}", file=sys.stderr)
    return 2


# --------------------------------------------------------------------------- search


def cmd_search(args: argparse.Namespace) -> int:
    from bridge.operations.search import BadQuery, LeadQuery, search_leads

    runtime = load_runtime_for(args)
    query = LeadQuery(
        lead_id=args.lead_id,
        email=args.email,
        phone=args.phone,
        received_from=args.received_from,
        received_to=args.received_to,
        status=args.status,
        destination=args.destination,
    )
    try:
        page = with_store(
            runtime, lambda s: search_leads(s, query, limit=args.limit, cursor=args.cursor)
        )
    except BadQuery as exc:
        return _bad(exc)
    if args.json:
        print_json(
            {
                "leads": [{**asdict(x), "received_at": iso(x.received_at)} for x in page.leads],
                "next_cursor": page.next_cursor,
                "total": page.total,
                "total_capped": page.total_capped,
            }
        )
        return 0
    now = time.time()
    rows = [
        (
            x.id + (" (test)" if x.test else "") + (" (purged)" if x.purged else ""),
            relative(x.received_at, now),
            ", ".join(f"{d}={s}" for d, s in sorted(x.deliveries.items())) or "-",
        )
        for x in page.leads
    ]
    print(table(["LEAD", "RECEIVED", "DELIVERIES"], rows))
    more = "more than " if page.total_capped else ""
    print(f"\n{len(page.leads)} shown of {more}{page.total} matching")
    if page.next_cursor:
        print(f"next page: --cursor {page.next_cursor}")
    return 0


# --------------------------------------------------------------------------- dead letters


def cmd_dead_letters(args: argparse.Namespace) -> int:
    from bridge.operations.dead_letters import (
        DeadLetterQuery,
        list_dead_letters,
        preview_replay,
        replay_dead_letters,
    )
    from bridge.operations.search import BadQuery

    runtime = load_runtime_for(args)
    query = DeadLetterQuery(args.destination, args.error_class, args.since, args.until)
    if args.ids and not args.replay:
        return _bad(ValueError("--id selects deliveries to replay: add --replay"))

    async def listing(store: Store) -> Any:
        return await list_dead_letters(store, query, limit=args.limit)

    async def replay(store: Store) -> dict[str, Any]:
        preview = await preview_replay(store, query, ids=args.ids)
        out: dict[str, Any] = {"preview": asdict(preview), "requeued": 0}
        if preview.count == 0:
            return out
        if not args.yes:
            if args.json or not sys.stdin.isatty():
                raise LeadBridgeError("refusing to replay without --yes (not interactive)")
            per = ", ".join(f"{d}: {n}" for d, n in preview.by_destination.items())
            answer = await asyncio.to_thread(
                input, f"requeue {preview.count} dead deliveries ({per})? [y/N] "
            )
            if answer.strip().lower() not in ("y", "yes"):
                out["cancelled"] = True
                return out
        out["requeued"] = await replay_dead_letters(
            store, query, actor=cli_actor(), ids=args.ids, as_of=preview.as_of
        )
        return out

    try:
        if args.replay:
            result = with_store(runtime, replay)
        else:
            page = with_store(runtime, listing)
    except BadQuery as exc:
        return _bad(exc)
    if args.replay:
        if args.json:
            print_json(result)
        elif result["preview"]["count"] == 0:
            print("no dead letter matches: nothing to replay")
        elif result.get("cancelled"):
            print("cancelled: nothing requeued")
        else:
            print(
                f"requeued {result['requeued']} of {result['preview']['count']} previewed; "
                "a running lead-bridge picks them up at its next poll"
            )
        return 0
    if args.json:
        print_json(
            {
                "dead_letters": [
                    {**asdict(x.delivery), "last_error": x.error, "error_class": x.error_class}
                    for x in page.items
                ],
                "total": page.total,
            }
        )
        return 0
    now = time.time()
    rows = [
        (
            x.delivery.id,
            x.delivery.lead_id,
            x.delivery.destination,
            relative(x.delivery.updated_at, now),
            x.error_class,
            (x.error or "-")[:70],
        )
        for x in page.items
    ]
    print(table(["ID", "LEAD", "DESTINATION", "DIED", "CLASS", "ERROR"], rows))
    print(f"\n{len(page.items)} shown of {page.total} matching; add --replay to requeue them")
    return 0


# --------------------------------------------------------------------------- overview, drift


def _spark(counts: list[int]) -> str:
    bars = " ▁▂▃▄▅▆▇█"
    top = max(counts) or 1
    return "".join(bars[0 if c == 0 else max(1, round(c / top * 8))] for c in counts)


def cmd_overview(args: argparse.Namespace) -> int:
    from bridge.operations.overview import overview

    runtime = load_runtime_for(args)
    view = with_store(runtime, lambda s: overview(s, runtime))
    if args.json:
        print_json(asdict(view))
        return 0
    rows = [
        (
            d.name,
            d.delivered,
            d.pending,
            d.retrying,
            d.dead,
            duration(d.oldest_pending_age) if d.oldest_pending_age is not None else "-",
            _spark(d.per_hour),
            (d.last_error or "-")[:50],
        )
        for d in view.destinations
    ]
    print(
        table(
            [
                "DESTINATION",
                "DELIVERED",
                "PENDING",
                "RETRYING",
                "DEAD",
                "OLDEST",
                "24H",
                "LAST ERROR",
            ],
            rows,
        )
    )
    print(f"\nleads: {view.leads}  unrouted: {view.unrouted}  quarantined: {view.quarantined}")
    if view.drift:
        print(f"schema drift: {', '.join(k.key for k in view.drift)} (lead-bridge drift)")
    return 0


def cmd_drift(args: argparse.Namespace) -> int:
    from bridge.operations.drift import drift_keys

    runtime = load_runtime_for(args)
    keys = with_store(runtime, lambda s: drift_keys(s, runtime))
    if args.json:
        print_json([asdict(k) for k in keys])
        return 0
    if not keys:
        print("no schema drift: every provider key seen is read by some mapping")
        return 0
    rows = [
        (k.key, k.count, iso(k.first_seen), iso(k.last_seen), ", ".join(k.destinations))
        for k in keys
    ]
    print(table(["KEY", "COUNT", "FIRST SEEN", "LAST SEEN", "UNREAD BY"], rows))
    return 0


# --------------------------------------------------------------------------- destinations


def cmd_check(args: argparse.Namespace) -> int:
    from bridge.operations.credentials import check_destination

    runtime = load_runtime_for(args, strict=True)
    names = args.names or [d.name for d in runtime.destinations]
    unknown = [n for n in names if runtime.destination(n) is None]
    if unknown:
        known = ", ".join(d.name for d in runtime.destinations) or "none configured"
        return _bad(ValueError(f"no destination {unknown[0]!r}; known: {known}"))

    async def run() -> list[tuple[str, Any]]:
        results = []
        for name in names:
            dest = runtime.destination(name)
            assert dest is not None
            results.append((name, await check_destination(dest)))
        return results

    results = asyncio.run(run())
    if args.json:
        print_json({name: asdict(r) for name, r in results})
    else:
        marks = {True: "ok", False: "FAILED", None: "no check"}
        print(
            table(
                ["DESTINATION", "RESULT", "DETAIL"],
                [(n, marks[r.ok], r.detail) for n, r in results],
            )
        )
    return 1 if any(r.ok is False for _, r in results) else 0


def cmd_test_send(args: argparse.Namespace) -> int:
    from bridge.operations.testsend import send_test_lead

    runtime = load_runtime_for(args, strict=True)
    dest = runtime.destination(args.name)
    if dest is None:
        known = ", ".join(d.name for d in runtime.destinations) or "none configured"
        return _bad(ValueError(f"no destination {args.name!r}; known: {known}"))
    result = with_store(runtime, lambda s: send_test_lead(s, dest, actor=cli_actor()))
    if args.json:
        print_json(asdict(result))
    elif result.ok:
        print(
            f"sent test lead {result.lead_id} to {result.destination}: "
            f"status {result.status_code or '-'}, remote id {result.remote_id or '-'}, "
            f"{result.duration_ms:.0f} ms"
        )
    else:
        print(f"test lead {result.lead_id} to {result.destination} failed: {result.error}")
    if not result.matched and not args.json:
        print("note: the destination's `when:` would skip this lead (sent anyway)")
    return 0 if result.ok else 1


def cmd_audit(args: argparse.Namespace) -> int:
    from bridge.operations.audit import list_audit

    runtime = load_runtime_for(args)
    entries = with_store(runtime, lambda s: list_audit(s, limit=args.limit, action=args.action))
    if args.json:
        print_json([{**asdict(e), "at": iso(e.at)} for e in entries])
        return 0
    rows = [(iso(e.at), e.actor, e.action, e.target or "-", e.detail) for e in entries]
    print(table(["WHEN", "WHO", "ACTION", "TARGET", "DETAIL"], rows))
    return 0
