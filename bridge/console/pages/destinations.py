"""Destinations: check credentials (and send a test lead), the answer shown as is."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from bridge.console.web import Call, Console, Refused
from bridge.destinations import Destination
from bridge.operations.credentials import check_destination
from bridge.operations.testsend import send_test_lead


def _destination(console: Console, call: Call) -> Destination:
    name = call.request.path_params["name"]
    dest = console.state.runtime.destination(name)
    if dest is None:
        raise Refused(404, "No destination with this name.")
    return dest


async def destinations(
    console: Console, call: Call, result: dict[str, Any] | None = None
) -> Response:
    return console.render(
        call.request,
        "destinations.html",
        call.principal,
        destinations=console.state.runtime.destinations,
        result=result,
    )


async def check(console: Console, call: Call) -> Response:
    dest = _destination(console, call)
    answer = await check_destination(dest)
    result = {
        "destination": dest.name,
        "action": "Credentials check",
        "ok": answer.ok,
        "detail": answer.detail,
        "status_code": answer.status_code,
    }
    return await destinations(console, call, result)


async def test_send(console: Console, call: Call) -> Response:
    dest = _destination(console, call)
    sent = await send_test_lead(console.state.store, dest, actor=call.actor)
    lines = [f"test lead {sent.lead_id} ({sent.duration_ms} ms)"]
    if not sent.matched:
        lines.append("note: this destination's `when` would skip such a lead; it was sent anyway")
    if sent.error:
        lines.append(sent.error)
    if sent.remote_id:
        lines.append(f"remote id: {sent.remote_id}")
    result = {
        "destination": dest.name,
        "action": "Test lead",
        "ok": sent.ok,
        "detail": "\n".join(lines),
        "status_code": sent.status_code,
    }
    return await destinations(console, call, result)


def routes(console: Console) -> list[Route]:
    async def page(console: Console, call: Call) -> Response:
        return await destinations(console, call)

    return [
        Route("/destinations", console.page(page), methods=["GET"]),
        # A check sends no lead and changes nothing: viewers may run it.
        Route("/destinations/{name}/check", console.page(check), methods=["POST"]),
        Route("/destinations/{name}/test", console.page(test_send, acts=True), methods=["POST"]),
    ]
