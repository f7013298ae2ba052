"""The admin API's erasure: ``POST /admin/erase/preview`` counts, ``POST
/admin/erase`` with ``confirm: true`` removes (as ``lead-bridge erase``).

Mounted by :mod:`bridge.admin.routes`, behind the admin token. Neither answer nor log line holds the address: counts and lead ids.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bridge.admin.http import BadRequest, Handler, actor, body_problem
from bridge.intake import json_response
from bridge.logs import event
from bridge.models import EraseReport
from bridge.operations import audit

if TYPE_CHECKING:
    from bridge.state import AppState

log = logging.getLogger("lead_bridge.admin")

M = TypeVar("M", bound="EraseTarget")


class EraseTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    email: str | None = Field(None, min_length=3, max_length=320)
    lead_id: str | None = Field(None, min_length=1, max_length=255)


class EraseRequest(EraseTarget):
    confirm: bool = Field(
        False, description="must be true: an erasure cannot be undone (preview first)"
    )


def _parse(model: type[M], body: bytes) -> M:
    try:
        parsed = model.model_validate_json(body)
    except ValidationError as exc:
        raise body_problem(exc, model) from None
    if (parsed.email is None) == (parsed.lead_id is None):
        raise BadRequest("give exactly one of email or lead_id")
    if parsed.email is not None and "@" not in parsed.email:
        raise BadRequest("email: expected an e-mail address")
    return parsed


def _answer(report: EraseReport, *, dry_run: bool) -> Response:
    return json_response(
        200, {**report.as_dict(), "dry_run": dry_run, "files_clean": report.files_clean}
    )


def erase_routes(state: AppState, protected: Callable[[Handler], Handler]) -> list[BaseRoute]:
    store = state.store

    async def erase_preview(request: Request) -> Response:
        """Count what an erasure would remove; nothing changes.
        ---
        summary: Preview an erasure
        operationId: erasePreview
        security: [{adminToken: []}]
        requestBody:
          required: true
          content: {application/json: {schema: {$ref: "#/components/schemas/EraseTarget"}}}
        responses:
          "200":
            description: What POST /admin/erase would remove now (dry_run is true)
            content: {application/json: {schema: {$ref: "#/components/schemas/EraseReport"}}}
          "400": {$ref: "#/components/responses/Error"}
          "401": {$ref: "#/components/responses/Unauthorized"}
        """
        target = _parse(EraseTarget, await request.body())
        report = await store.erase_preview(email=target.email, lead_id=target.lead_id)
        return _answer(report, dry_run=True)

    async def erase(request: Request) -> Response:
        """Remove a person's data: leads (their ids kept as tombstones), deliveries,
        attempts, quarantined bodies, errors quoting the address.
        ---
        summary: Erase a person's data
        operationId: erase
        security: [{adminToken: []}]
        requestBody:
          required: true
          content: {application/json: {schema: {$ref: "#/components/schemas/EraseRequest"}}}
        responses:
          "200":
            description: What was removed (dry_run is false)
            content: {application/json: {schema: {$ref: "#/components/schemas/EraseReport"}}}
          "400": {$ref: "#/components/responses/Error"}
          "401": {$ref: "#/components/responses/Unauthorized"}
        """
        body = _parse(EraseRequest, await request.body())
        if not body.confirm:
            raise BadRequest(
                "confirm: send true to erase; it cannot be undone "
                "(POST /admin/erase/preview counts first)"
            )
        report = await store.erase(email=body.email, lead_id=body.lead_id)
        detail = {k: v for k, v in report.as_dict().items() if k != "lead_ids"}
        target = body.lead_id if body.lead_id is not None else "by email"
        await audit.record(store, actor(request), "erase", target=target, detail=detail)
        event(
            log,
            "admin_erase",
            by="email" if body.email else "lead",
            leads=report.leads,
            quarantine=report.quarantine,
            lead_ids=report.lead_ids[:20],
        )
        return _answer(report, dry_run=False)

    return [
        Route("/erase/preview", protected(erase_preview), methods=["POST"]),
        Route("/erase", protected(erase), methods=["POST"]),
    ]
