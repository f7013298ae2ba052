"""Dead letters: filter, select some or all matching, preview the count, confirm."""

from __future__ import annotations

import time
from urllib.parse import urlencode

from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bridge.admin import BadRequest, parse_since
from bridge.console.forms import Form
from bridge.console.web import PREFIX, Call, Console, Refused
from bridge.operations import audit
from bridge.store.base import DeliveryRecord

LIMIT = 1000


def _filters(source: Form | dict[str, str]) -> dict[str, str]:
    return {key: source.get(key, "").strip() for key in ("destination", "error", "since")}


async def _matching(console: Console, filters: dict[str, str]) -> list[DeliveryRecord]:
    try:
        since = parse_since(filters["since"], time.time()) if filters["since"] else None
    except BadRequest as exc:
        raise Refused(400, str(exc)) from None
    rows = await console.state.store.list_deliveries(
        status="dead", destination=filters["destination"] or None, since=since, limit=LIMIT
    )
    needle = filters["error"].lower()
    return [d for d in rows if needle in (d.last_error or "").lower()]


async def dead_letters(console: Console, call: Call) -> Response:
    filters = _filters(dict(call.request.query_params))
    rows = await _matching(console, filters)
    return console.render(
        call.request,
        "dead_letters.html",
        call.principal,
        filters=filters,
        rows=rows,
        destinations=[d.name for d in console.state.runtime.destinations],
        replayed=call.request.query_params.get("replayed"),
    )


def _key(d: DeliveryRecord) -> str:
    # Destination names cannot hold ":"; lead ids can hold anything.
    return f"{d.destination}:{d.lead_id}"


async def replay(console: Console, call: Call) -> Response:
    form = call.form
    assert form is not None
    filters = _filters(form)
    matching = {_key(d): d for d in await _matching(console, filters)}
    if form.get("scope") == "all":
        chosen = list(matching)
    else:
        chosen = [k for k in form.getlist("selected") if k in matching]
    if not chosen:
        raise Refused(400, "Nothing selected: tick some dead letters or choose all matching.")
    if not form.flag("confirm"):
        return console.render(
            call.request,
            "dead_letters_preview.html",
            call.principal,
            filters=filters,
            scope=form.get("scope"),
            chosen=chosen,
            by_destination=_count(matching[k] for k in chosen),
        )
    state = console.state
    names = [d.name for d in state.runtime.active]
    requeued = 0
    for key in chosen:
        destination, _, lead_id = key.partition(":")
        if destination not in names:
            continue
        result = await state.store.requeue(
            now=time.time(),
            configured=names,
            lead_id=lead_id,
            destination=destination,
            dead_only=True,
        )
        requeued += result.requeued
    if state.engine is not None:
        state.engine.wake()
    await audit.record(
        state.store,
        call.actor,
        "bulk_replay",
        target=filters["destination"] or "all destinations",
        detail={"selected": len(chosen), "requeued": requeued},
    )
    query = {k: v for k, v in filters.items() if v}
    query["replayed"] = f"{requeued} dead letters requeued"
    return RedirectResponse(f"{PREFIX}/dead-letters?{urlencode(query)}", status_code=303)


def _count(rows: object) -> dict[str, int]:
    counts: dict[str, int] = {}
    for d in rows:  # type: ignore[attr-defined]
        counts[d.destination] = counts.get(d.destination, 0) + 1
    return counts


def routes(console: Console) -> list[Route]:
    return [
        Route("/dead-letters", console.page(dead_letters), methods=["GET"]),
        Route("/dead-letters/replay", console.page(replay, acts=True), methods=["POST"]),
    ]
