"""Dead letters: filter, select some or all matching, preview the count, confirm
(operations.dead_letters; the replay is audited there)."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bridge.admin.http import BadRequest, parse_since
from bridge.console.web import PREFIX, Call, Console, Refused
from bridge.operations.dead_letters import (
    ERROR_CLASSES,
    DeadLetterQuery,
    list_dead_letters,
    preview_replay,
    replay_dead_letters,
)
from bridge.operations.search import BadQuery

PAGE_SIZE = 100
FILTERS = ("destination", "error_class", "since")


def _filters(source: Any) -> dict[str, str]:
    return {key: (source.get(key) or "").strip() for key in FILTERS}


def _query(filters: dict[str, str]) -> DeadLetterQuery:
    try:
        since = parse_since(filters["since"], time.time()) if filters["since"] else None
    except BadRequest as exc:
        raise Refused(400, str(exc)) from None
    return DeadLetterQuery(
        destination=filters["destination"] or None,
        error_class=filters["error_class"] or None,
        since=since,
    )


async def dead_letters(console: Console, call: Call) -> Response:
    params = call.request.query_params
    filters = _filters(params)
    try:
        page = await list_dead_letters(
            console.state.store,
            _query(filters),
            limit=PAGE_SIZE,
            cursor=params.get("cursor") or None,
        )
    except BadQuery as exc:
        raise Refused(400, str(exc)) from None
    next_url = None
    if page.next_cursor:
        next_url = "?" + urlencode(
            {**{k: v for k, v in filters.items() if v}, "cursor": page.next_cursor}
        )
    return console.render(
        call.request,
        "dead_letters.html",
        call.principal,
        filters=filters,
        page=page,
        next_url=next_url,
        error_classes=ERROR_CLASSES,
        destinations=[d.name for d in console.state.runtime.destinations],
        replayed=params.get("replayed"),
    )


def _ids(values: list[str]) -> list[int]:
    try:
        return [int(v) for v in values]
    except ValueError:
        raise Refused(400, "selected: expected delivery ids") from None


async def replay(console: Console, call: Call) -> Response:
    form = call.form
    assert form is not None
    filters = _filters(form)
    query = _query(filters)
    ids = None if form.get("scope") == "all" else _ids(form.getlist("selected"))
    if ids == []:
        raise Refused(400, "Nothing selected: tick some dead letters or choose all matching.")
    store = console.state.store
    try:
        if not form.flag("confirm"):
            preview = await preview_replay(store, query, ids=ids)
            return console.render(
                call.request,
                "dead_letters_preview.html",
                call.principal,
                filters=filters,
                scope=form.get("scope"),
                ids=ids or [],
                preview=preview,
            )
        as_of = float(form.get("as_of")) if form.get("as_of") else None
        requeued = await replay_dead_letters(store, query, actor=call.actor, ids=ids, as_of=as_of)
    except BadQuery as exc:
        raise Refused(400, str(exc)) from None
    except ValueError:
        raise Refused(400, "as_of: expected the preview's time") from None
    if console.state.engine is not None:
        console.state.engine.wake()
    query_string = {k: v for k, v in filters.items() if v}
    query_string["replayed"] = f"{requeued} dead letters requeued"
    return RedirectResponse(f"{PREFIX}/dead-letters?{urlencode(query_string)}", status_code=303)


def routes(console: Console) -> list[Route]:
    return [
        Route("/dead-letters", console.page(dead_letters), methods=["GET"]),
        Route("/dead-letters/replay", console.page(replay, acts=True), methods=["POST"]),
    ]
