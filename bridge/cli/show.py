"""``lead-bridge show LEAD_ID``: a lead, its mapped record per destination
under the current config, and every attempt."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from typing import Any

from bridge.cli.common import (
    duration,
    iso,
    load_runtime_for,
    print_json,
    relative,
    shorten,
    table,
    with_store,
)
from bridge.models import AttemptRecord, DeliveryRecord, LeadRecord


def cmd_show(args: argparse.Namespace) -> int:
    runtime = load_runtime_for(args)

    from bridge.operations.timeline import lead_timeline

    timeline = with_store(runtime, lambda s: lead_timeline(s, runtime, args.lead_id))
    if timeline is None:
        print(f"lead {args.lead_id!r} is not stored", file=sys.stderr)
        return 1
    lead, deliveries, attempts = timeline.lead, timeline.deliveries, timeline.attempts
    payload = timeline.payload
    mapped = runtime.preview(payload)
    if args.json:
        print_json(
            {
                "lead": {**asdict(lead), "payload": payload},
                "mapped": mapped,
                "deliveries": [asdict(d) for d in deliveries],
                "attempts": [asdict(a) for a in attempts],
            }
        )
        return 0
    now = time.time()
    _print_lead(lead, payload, now)
    for d in deliveries:
        _print_delivery(d, mapped.get(d.destination), now)
        mine = [a for a in attempts if a.delivery_id == d.id]
        if mine:
            print("  " + _attempts_table(mine, now).replace("\n", "\n  "))
        print()
    if not deliveries:
        print("no deliveries (no destination was configured when it arrived)")
    return 0


def _print_json_block(value: Any) -> None:
    for line in json.dumps(value, indent=2, ensure_ascii=False).splitlines():
        print(f"    {line}")


def _print_lead(lead: LeadRecord, payload: Any, now: float) -> None:
    print(f"lead {lead.id}")
    print(f"  received  {iso(lead.received_at)} ({relative(lead.received_at, now)})")
    print(f"  created   {lead.created or '-'}")
    print(f"  url       {lead.url or '-'}")
    if payload is None:
        print("  payload   (purged or erased)")
    else:
        print("  payload")
        _print_json_block(payload)
    print()


def _print_delivery(d: DeliveryRecord, info: dict[str, Any] | None, now: float) -> None:
    """A delivery's state, and its destination's mapping under the current config."""
    state = "pending (in flight)" if d.leased else d.status
    print(f"destination {d.destination}: {state}, {d.attempts} attempt(s)")
    if d.remote_id or d.last_status_code:
        print(f"  remote id {d.remote_id or '-'} (HTTP {d.last_status_code or '-'})")
    if d.status == "pending" and d.next_attempt_at:
        print(f"  next attempt {relative(d.next_attempt_at, now)}")
    if d.last_error and d.status != "delivered":
        print(f"  last error: {d.last_error}")
    if info is None:
        return
    if "error" in info:
        print(f"  mapping (current config): {info['error']}")
    elif not info["when"]:
        print("  mapping (current config): `when:` does not match")
    else:
        print("  mapped record (current config):")
        _print_json_block(info["record"])


def _attempts_table(attempts: list[AttemptRecord], now: float) -> str:
    return table(
        ["#", "time", "duration", "outcome", "status", "error"],
        [
            [
                a.number,
                f"{iso(a.started_at)} ({relative(a.started_at, now)})",
                duration(a.duration),
                a.outcome,
                a.status_code,
                shorten(a.error, 60),
            ]
            for a in attempts
        ],
    )
