"""The admin API's operator endpoints (overview, drift, unrouted leads,
mapping playground, credentials check, test lead, audit log). Each handler
parses its parameters and renders one :mod:`bridge.operations` function;
:func:`bridge.admin.routes.admin_routes` mounts them behind the admin token.
Each docstring holds the OpenAPI operation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bridge.admin.http import Handler, actor, int_param, iso, page_limit, parse_body, query
from bridge.intake import error, json_response
from bridge.operations import audit
from bridge.operations.credentials import check_destination
from bridge.operations.drift import DriftKey, drift_keys
from bridge.operations.mapping import evaluate
from bridge.operations.overview import LocalEngineView, overview, unrouted_leads
from bridge.operations.search import BadQuery
from bridge.operations.testsend import send_test_lead

if TYPE_CHECKING:
    from bridge.state import AppState


def drift_json(k: DriftKey) -> dict[str, Any]:
    return {
        "key": k.key,
        "first_seen": iso(k.first_seen),
        "last_seen": iso(k.last_seen),
        "count": k.count,
        "destinations": k.destinations,
    }


class MapRequest(BaseModel):
    # As the handler reads it: a non-empty leads array or a non-empty lead object.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": ["leads"], "properties": {"leads": {"type": "array", "minItems": 1}}},
                {
                    "required": ["lead"],
                    "properties": {"lead": {"type": "object", "minProperties": 1}},
                },
            ]
        },
    )

    lead: dict[str, Any] | None = None
    leads: list[dict[str, Any]] | None = Field(None, max_length=100)


def operator_routes(state: AppState, protected: Callable[[Handler], Handler]) -> list[BaseRoute]:
    """The routes, each wrapped by ``protected`` (token check, error mapping)."""
    store, runtime = state.store, state.runtime

    async def overview_(request: Request) -> Response:
        """Per destination: counts, oldest pending, last error, deliveries per hour, state.
        ---
        summary: Overview
        operationId: getOverview
        security: [{adminToken: []}]
        responses:
          "200":
            description: The overview page's data
            content: {application/json: {schema: {$ref: "#/components/schemas/Overview"}}}
          "401": {$ref: "#/components/responses/Unauthorized"}
        """
        view = await overview(store, runtime, LocalEngineView(state.engine, state.metrics))
        data = asdict(view)
        data["generated_at"] = iso(view.generated_at)
        for dest in data["destinations"]:
            for key in ("last_error_at", "paused_until"):
                dest[key] = iso(dest[key])
        data["drift"] = [drift_json(k) for k in view.drift]
        return json_response(200, data)

    async def drift(request: Request) -> Response:
        """Provider data keys that no destination's mapping reads (schema drift).
        ---
        summary: Schema drift
        operationId: getDrift
        security: [{adminToken: []}]
        responses:
          "200":
            description: Keys with first/last seen, count and where they went unread
            content: {application/json: {schema: {type: object, properties: {keys: {type: array, items: {$ref: "#/components/schemas/DriftKey"}}}}}}
          "401": {$ref: "#/components/responses/Unauthorized"}
        """
        return json_response(
            200, {"keys": [drift_json(k) for k in await drift_keys(store, runtime)]}
        )

    async def unrouted(request: Request) -> Response:
        """The newest leads that no destination's `when:` took.
        ---
        summary: Unrouted leads
        operationId: listUnrouted
        security: [{adminToken: []}]
        parameters:
          - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 500, default: 50}}
        responses:
          "200":
            description: Lead ids and when they were received
            content: {application/json: {schema: {type: object, properties: {leads: {type: array, items: {type: object}}}}}}
          "400": {$ref: "#/components/responses/Error"}
          "401": {$ref: "#/components/responses/Unauthorized"}
        """
        q = query(request, ("limit",))
        limit = page_limit(q.get("limit"), 50)
        rows = await unrouted_leads(store, limit=limit)
        return json_response(200, {"leads": [{"id": i, "received_at": iso(t)} for i, t in rows]})

    async def map_(request: Request) -> Response:
        """The mapping playground: each destination's verdict for a pasted lead.
        ---
        summary: Map a lead
        operationId: mapLead
        security: [{adminToken: []}]
        requestBody:
          required: true
          content: {application/json: {schema: {$ref: "#/components/schemas/MapRequest"}}}
        responses:
          "200":
            description: Per lead and destination the filter verdict, record, unmapped keys, error (as `lead-bridge map --json`)
            content: {application/json: {schema: {type: object}}}
          "400": {$ref: "#/components/responses/Error"}
          "401": {$ref: "#/components/responses/Unauthorized"}
        """
        body = parse_body(MapRequest, await request.body())
        leads = body.leads or ([body.lead] if body.lead else None)
        if not leads:
            raise BadQuery("give lead (an object) or leads (an array of objects)")
        return json_response(200, evaluate(runtime, leads))

    def _destination(request: Request) -> Any:
        name = request.path_params["name"]
        dest = runtime.destination(name)
        if dest is None:
            known = ", ".join(d.name for d in runtime.destinations) or "none configured"
            raise LookupError(f"no such destination; known: {known}")
        return dest

    async def check(request: Request) -> Response:
        """Check a destination's credentials and reachability (no lead is sent).
        ---
        summary: Check credentials
        operationId: checkCredentials
        security: [{adminToken: []}]
        parameters:
          - {name: name, in: path, required: true, schema: {type: string}}
        responses:
          "200":
            description: The connector's answer (ok is null when it has no check)
            content: {application/json: {schema: {$ref: "#/components/schemas/CheckResult"}}}
          "401": {$ref: "#/components/responses/Unauthorized"}
          "404": {$ref: "#/components/responses/Error"}
        """
        try:
            dest = _destination(request)
        except LookupError as exc:
            return error(404, "not_found", str(exc))
        return json_response(200, asdict(await check_destination(dest)))

    async def test_send(request: Request) -> Response:
        """Send a synthetic test lead (id lb-test-…, test: true) to one destination, once.
        ---
        summary: Send a test lead
        operationId: sendTestLead
        security: [{adminToken: []}]
        parameters:
          - {name: name, in: path, required: true, schema: {type: string}}
        responses:
          "200":
            description: What was sent and the destination's answer; the lead is not stored
            content: {application/json: {schema: {$ref: "#/components/schemas/TestSendResult"}}}
          "401": {$ref: "#/components/responses/Unauthorized"}
          "404": {$ref: "#/components/responses/Error"}
        """
        try:
            dest = _destination(request)
        except LookupError as exc:
            return error(404, "not_found", str(exc))
        return json_response(200, asdict(await send_test_lead(store, dest, actor=actor(request))))

    async def audit_log(request: Request) -> Response:
        """State-changing operator actions, newest first (no personal data).
        ---
        summary: Audit log
        operationId: listAudit
        security: [{adminToken: []}]
        parameters:
          - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 500, default: 100}}
          - {name: before_id, in: query, schema: {type: integer, minimum: 0, maximum: 4611686018427387904}}
          - {name: action, in: query, schema: {type: string}}
        responses:
          "200":
            description: Entries
            content: {application/json: {schema: {type: object, properties: {entries: {type: array, items: {$ref: "#/components/schemas/AuditEntry"}}}}}}
          "400": {$ref: "#/components/responses/Error"}
          "401": {$ref: "#/components/responses/Unauthorized"}
        """
        q = query(request, ("limit", "before_id", "action"))
        limit = page_limit(q.get("limit"), 100)
        before = q.get("before_id")
        entries = await audit.list_audit(
            store,
            limit=limit,
            before_id=int_param(before, "before_id", 0) if before is not None else None,
            action=q.get("action"),
        )
        return json_response(200, {"entries": [{**asdict(e), "at": iso(e.at)} for e in entries]})

    return [
        Route("/overview", protected(overview_), methods=["GET"]),
        Route("/drift", protected(drift), methods=["GET"]),
        Route("/unrouted", protected(unrouted), methods=["GET"]),
        Route("/map", protected(map_), methods=["POST"]),
        Route("/destinations/{name}/check", protected(check), methods=["POST"]),
        Route("/destinations/{name}/test", protected(test_send), methods=["POST"]),
        Route("/audit", protected(audit_log), methods=["GET"]),
    ]
