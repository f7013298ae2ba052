"""Erase a person: by email or lead id, a preview of the counts, then confirm.
Results are counts, never values."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from bridge.console.web import Call, Console, Refused
from bridge.operations import audit


def _target(call: Call) -> tuple[str | None, str | None]:
    assert call.form is not None
    email = call.form.get("email").strip() or None
    lead_id = call.form.get("lead_id").strip() or None
    if (email is None) == (lead_id is None):
        raise Refused(400, "Give an email address or a lead id (one of them).")
    if email is not None and "@" not in email:
        raise Refused(400, "That is not an email address.")
    return email, lead_id


async def erase_form(console: Console, call: Call) -> Response:
    return console.render(call.request, "erase.html", call.principal, step="form")


async def preview(console: Console, call: Call) -> Response:
    email, lead_id = _target(call)
    report = await console.state.store.erase_preview(email=email, lead_id=lead_id)
    return console.render(
        call.request,
        "erase.html",
        call.principal,
        step="preview",
        email=email or "",
        lead_id=lead_id or "",
        report=report,
    )


async def confirm(console: Console, call: Call) -> Response:
    email, lead_id = _target(call)
    store = console.state.store
    report = await store.erase(email=email, lead_id=lead_id)
    await audit.record(
        store,
        call.actor,
        "erase",
        target=lead_id if lead_id is not None else "by email",
        detail={
            "leads": report.leads,
            "deliveries": report.deliveries,
            "attempts": report.attempts,
            "quarantine": report.quarantine,
        },
    )
    return console.render(call.request, "erase.html", call.principal, step="done", report=report)


def routes(console: Console) -> list[Route]:
    return [
        Route("/erase", console.page(erase_form), methods=["GET"]),
        # The preview reads only, but it is a POST so the address stays out of the URL.
        Route("/erase/preview", console.page(preview, acts=True), methods=["POST"]),
        Route("/erase/confirm", console.page(confirm, acts=True), methods=["POST"]),
    ]
