"""Leads: search, and one lead's timeline with replay."""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from typing import Any
from urllib.parse import quote, urlencode

from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bridge.console.web import PREFIX, Call, Console, Refused
from bridge.logs import event
from bridge.store.base import STATUSES

log = logging.getLogger("lead_bridge.console")

PAGE_SIZE = 50


async def search(console: Console, call: Call) -> Response:
    form = call.form
    criteria = {
        "lead_id": form.get("lead_id").strip() if form else "",
        "status": (form.get("status") if form else call.request.query_params.get("status", "")),
        "destination": form.get("destination")
        if form
        else call.request.query_params.get("destination", ""),
    }
    results: list[dict[str, Any]] | None = None
    store = console.state.store
    if criteria["status"] and criteria["status"] not in STATUSES:
        raise Refused(400, f"status: expected one of {', '.join(STATUSES)}")
    if criteria["lead_id"]:
        record = await store.get_lead(criteria["lead_id"])
        results = []
        if record is not None:
            deliveries = await store.get_deliveries(record.id)
            results.append(
                {
                    "id": record.id,
                    "received_at": record.received_at,
                    "deliveries": {d.destination: d.status for d in deliveries},
                }
            )
    elif criteria["status"] or criteria["destination"]:
        rows = await store.list_deliveries(
            status=criteria["status"] or None,
            destination=criteria["destination"] or None,
            limit=PAGE_SIZE,
        )
        grouped: dict[str, dict[str, str]] = defaultdict(dict)
        for d in rows:
            grouped[d.lead_id][d.destination] = d.status
        results = [
            {"id": lid, "received_at": None, "deliveries": statuses}
            for lid, statuses in grouped.items()
        ]
    return console.render(
        call.request,
        "leads.html",
        call.principal,
        criteria=criteria,
        results=results,
        statuses=STATUSES,
        destinations=[d.name for d in console.state.runtime.destinations],
    )


async def timeline(console: Console, call: Call) -> Response:
    state = console.state
    lead_id = call.request.path_params["lead_id"]
    record = await state.store.get_lead(lead_id)
    if record is None:
        raise Refused(404, f"No lead with id {lead_id!r}.")
    deliveries = await state.store.get_deliveries(lead_id)
    attempts = await state.store.get_attempts(lead_id)
    payload = json.loads(record.payload) if record.payload else None
    mapped = state.runtime.preview(payload)
    by_destination: dict[str, list[Any]] = defaultdict(list)
    for a in attempts:
        by_destination[a.destination].append(a)
    event(log, "console_lead_viewed", lead_id=lead_id, token=call.actor)
    return console.render(
        call.request,
        "timeline.html",
        call.principal,
        lead=record,
        payload=payload,
        deliveries=deliveries,
        attempts=by_destination,
        mapped=mapped,
        live=any(d.status == "pending" for d in deliveries),
        replayed=call.request.query_params.get("replayed"),
    )


async def replay(console: Console, call: Call) -> Response:
    state = console.state
    assert call.form is not None
    lead_id = call.request.path_params["lead_id"]
    destination = call.form.get("destination") or None
    force = call.form.flag("force")
    names = [d.name for d in state.runtime.active]
    if destination is not None and destination not in names:
        raise Refused(400, f"Unknown or disabled destination {destination!r}.")
    result = await state.store.requeue(
        now=time.time(),
        configured=names,
        lead_id=lead_id,
        destination=destination,
        force=force,
    )
    if state.engine is not None:
        state.engine.wake()
    event(
        log,
        "console_replay",
        token=call.actor,
        lead_id=lead_id,
        destination=destination,
        force=force,
        requeued=result.requeued,
    )
    message = f"{result.requeued} requeued"
    if result.refused_delivered:
        message += f", {result.refused_delivered} already delivered left alone (use force)"
    return RedirectResponse(
        f"{PREFIX}/leads/{quote(lead_id, safe='')}?{urlencode({'replayed': message})}",
        status_code=303,
    )


def routes(console: Console) -> list[Route]:
    return [
        Route("/leads", console.page(search), methods=["GET", "POST"]),
        Route("/leads/{lead_id:path}/replay", console.page(replay, acts=True), methods=["POST"]),
        Route("/leads/{lead_id:path}", console.page(timeline), methods=["GET"]),
    ]
