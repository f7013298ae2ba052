"""Leads: search, and one lead's timeline with replay."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bridge.console.web import PREFIX, Call, Console, Refused
from bridge.logs import event
from bridge.operations import audit
from bridge.operations.search import SEARCH_STATUSES, BadQuery, LeadQuery, search_leads
from bridge.operations.timeline import lead_timeline

log = logging.getLogger("lead_bridge.console")

PAGE_SIZE = 50


def _time(text: str, name: str) -> float | None:
    """A ``datetime-local`` value (read as UTC) or an ISO time with offset."""
    if not text.strip():
        return None
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        # The value is not quoted back: an error page never echoes what was sent.
        raise Refused(
            400, f"{name}: expected a date and time (2024-05-01T12:00 or ISO 8601 with offset)"
        ) from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


async def search(console: Console, call: Call) -> Response:
    source: Any = call.form if call.form is not None else call.request.query_params
    criteria = {
        key: source.get(key, "").strip()
        for key in (
            "lead_id",
            "email",
            "phone",
            "received_from",
            "received_to",
            "status",
            "destination",
        )
    }
    query = LeadQuery(
        lead_id=criteria["lead_id"] or None,
        email=criteria["email"] or None,
        phone=criteria["phone"] or None,
        received_from=_time(criteria["received_from"], "received from"),
        received_to=_time(criteria["received_to"], "received to"),
        status=criteria["status"] or None,
        destination=criteria["destination"] or None,
    )
    try:
        page = await search_leads(
            console.state.store, query, limit=PAGE_SIZE, cursor=source.get("cursor") or None
        )
    except BadQuery as exc:
        raise Refused(400, str(exc)) from None
    return console.render(
        call.request,
        "leads.html",
        call.principal,
        criteria=criteria,
        page=page,
        statuses=SEARCH_STATUSES,
        destinations=[d.name for d in console.state.runtime.destinations],
    )


async def timeline(console: Console, call: Call) -> Response:
    state = console.state
    lead_id = call.request.path_params["lead_id"]
    found = await lead_timeline(state.store, state.runtime, lead_id)
    if found is None:
        raise Refused(404, "No lead with this id.")
    by_destination: dict[str, list[Any]] = defaultdict(list)
    for a in found.attempts:
        by_destination[a.destination].append(a)
    event(log, "console_lead_viewed", lead_id=lead_id, token=call.principal.token_name)
    return console.render(
        call.request,
        "timeline.html",
        call.principal,
        t=found,
        attempts=by_destination,
        live=any(d.status == "pending" for d in found.deliveries),
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
        raise Refused(400, "destination: expected one of the enabled destinations.")
    result = await state.store.requeue(
        now=time.time(),
        configured=names,
        lead_id=lead_id,
        destination=destination,
        force=force,
    )
    if state.engine is not None:
        state.engine.wake()
    await audit.record(
        state.store,
        call.actor,
        "replay",
        target=lead_id,
        detail={
            "destination": destination,
            "force": force,
            "requeued": result.requeued,
            "refused_delivered": result.refused_delivered,
        },
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
