"""The admin API's own routes (status, lead lookup, deliveries, replay,
metrics), the token check around every route, and the assembly of the
operator (:mod:`bridge.admin.operator`, :mod:`bridge.admin.leads`) and
erasure (:mod:`bridge.admin.privacy`) routes and the OpenAPI document."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bridge.admin.http import (
    BadRequest,
    Handler,
    body_problem,
    delivery_json,
    iso,
    parse_limit,
    parse_since,
    token_index,
)
from bridge.admin.leads import lead_routes
from bridge.admin.openapi import openapi_json
from bridge.admin.operator import operator_routes
from bridge.admin.privacy import erase_routes
from bridge.errors import StoreError
from bridge.intake import error, json_response
from bridge.logs import event
from bridge.metrics_server import QueueGauges, scrape
from bridge.models import STATUSES, AttemptRecord
from bridge.operations import audit
from bridge.operations.search import BadQuery
from bridge.operations.timeline import lead_timeline

if TYPE_CHECKING:
    from bridge.state import AppState

log = logging.getLogger("lead_bridge.admin")


def attempt_json(a: AttemptRecord) -> dict[str, Any]:
    return {
        "destination": a.destination,
        "number": a.number,
        "started_at": iso(a.started_at),
        "duration_ms": round(a.duration * 1000, 1),
        "outcome": a.outcome,
        "error": a.error,
        "status_code": a.status_code,
        "remote_id": a.remote_id,
    }


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    lead_id: str | None = Field(None, min_length=1, max_length=255)
    destination: str | None = Field(None, min_length=1)
    dead: bool = False
    force: bool = False


def admin_routes(state: AppState) -> list[BaseRoute]:
    """The routes mounted at ``/admin``; none when ``admin.tokens`` is empty."""
    tokens = [t.get_secret_value() for t in state.runtime.config.admin.tokens]
    if not tokens:
        return []

    def protected(handler: Handler) -> Handler:
        async def wrapper(request: Request) -> Response:
            index = token_index(request, tokens)
            if index is None:
                response = error(401, "unauthorized", "send Authorization: Bearer <admin token>")
                response.headers["WWW-Authenticate"] = 'Bearer realm="lead-bridge admin"'
                return response
            # The audit log's "who": the token's config key path, never its value.
            request.state.actor = f"api:admin.tokens[{index}]"
            try:
                return await handler(request)
            except (BadRequest, BadQuery) as exc:
                return error(400, "bad_request", str(exc))
            except StoreError:
                return error(503, "store_unavailable", "the store is unavailable; try again")

        wrapper.__name__ = handler.__name__
        wrapper.__doc__ = handler.__doc__
        return wrapper

    store = state.store
    queue = QueueGauges(state.metrics, store, state.runtime.config.metrics.finished_counts_interval)

    async def status(request: Request) -> Response:
        """Queue and store overview.
        ---
        summary: Queue and store status
        operationId: getStatus
        security: [{adminToken: []}]
        responses:
          "200":
            description: Counts per destination and status
            content: {application/json: {schema: {$ref: "#/components/schemas/Status"}}}
          "401": {$ref: "#/components/responses/Unauthorized"}
        """
        now = time.time()
        st = await store.status(now)
        by_name = {d.destination: d for d in st.destinations}
        configured = {d.name: d for d in state.runtime.destinations}
        destinations = []
        for name in sorted(set(by_name) | set(configured)):
            row = by_name.get(name)
            dest = configured.get(name)
            oldest = row.oldest_pending_at if row else None
            destinations.append(
                {
                    "name": name,
                    "type": dest.config.type if dest else None,
                    "configured": dest is not None,
                    "enabled": bool(dest and dest.config.enabled),
                    "counts": row.counts if row else dict.fromkeys(STATUSES, 0),
                    "in_flight": row.in_flight if row else 0,
                    "oldest_pending_at": iso(oldest),
                    "oldest_pending_age_seconds": round(now - oldest, 3) if oldest else None,
                }
            )
        return json_response(
            200,
            {
                "leads": st.leads,
                "quarantined": st.quarantined,
                "undelivered": st.undelivered,
                "unrouted": st.unrouted,
                "workers": state.engine is not None,
                "destinations": destinations,
            },
        )

    async def lead(request: Request) -> Response:
        """One lead with its deliveries and attempts. The payload is shown only here.
        ---
        summary: Look up a lead
        operationId: getLead
        security: [{adminToken: []}]
        parameters:
          - {name: lead_id, in: path, required: true, schema: {type: string}}
        responses:
          "200":
            description: The lead, its deliveries and attempts (oldest first)
            content: {application/json: {schema: {$ref: "#/components/schemas/LeadDetail"}}}
          "401": {$ref: "#/components/responses/Unauthorized"}
          "404": {$ref: "#/components/responses/Error"}
        """
        lead_id = request.path_params["lead_id"]
        timeline = await lead_timeline(store, state.runtime, lead_id)
        if timeline is None:
            return error(404, "not_found", "no lead with this id")
        record, deliveries, attempts = timeline.lead, timeline.deliveries, timeline.attempts
        event(log, "admin_lead_viewed", lead_id=lead_id)
        return json_response(
            200,
            {
                "lead": {
                    "id": record.id,
                    "received_at": iso(record.received_at),
                    "created": record.created,
                    "url": record.url,
                    "purged": record.payload is None,
                    "payload": timeline.payload,
                },
                "deliveries": [delivery_json(d) for d in deliveries],
                "attempts": [attempt_json(a) for a in attempts],
                # as `lead-bridge show`: each destination's record under the current config
                "mapped": state.runtime.preview(timeline.payload),
            },
        )

    async def deliveries(request: Request) -> Response:
        """Deliveries, newest change first.
        ---
        summary: List deliveries
        operationId: listDeliveries
        security: [{adminToken: []}]
        parameters:
          - {name: status, in: query, schema: {type: string, enum: [pending, delivered, dead, skipped]}}
          - {name: destination, in: query, schema: {type: string}}
          - name: since
            in: query
            description: changed within a duration (30m, 2h, 1d) or since a date-time with offset
            schema:
              anyOf:
                - {type: string, pattern: '^ *[0-9]+([.][0-9]+)? *(ms|s|m|h|d)? *$'}
                - {type: string, format: date-time}
          - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 1000, default: 100}}
        responses:
          "200":
            description: Matching deliveries
            content:
              application/json:
                schema:
                  type: object
                  properties:
                    deliveries: {type: array, items: {$ref: "#/components/schemas/Delivery"}}
          "400": {$ref: "#/components/responses/Error"}
          "401": {$ref: "#/components/responses/Unauthorized"}
        """
        q = request.query_params
        unknown = sorted(set(q) - {"status", "destination", "since", "limit"})
        if unknown:
            raise BadRequest("unknown query parameter; use status, destination, since, limit")
        wanted = q.get("status")
        if wanted is not None and wanted not in STATUSES:
            raise BadRequest(f"status: expected one of {', '.join(STATUSES)}")
        since_text = q.get("since")
        since = parse_since(since_text, time.time()) if since_text is not None else None
        rows = await store.list_deliveries(
            status=wanted,
            destination=q.get("destination") or None,
            since=since,
            limit=parse_limit(q.get("limit")),
        )
        return json_response(200, {"deliveries": [delivery_json(d) for d in rows]})

    async def replay(request: Request) -> Response:
        """Make deliveries due again (dead letters, or delivered ones with force).
        ---
        summary: Replay deliveries
        operationId: replay
        security: [{adminToken: []}]
        requestBody:
          required: true
          content: {application/json: {schema: {$ref: "#/components/schemas/ReplayRequest"}}}
        responses:
          "200":
            description: What was requeued
            content: {application/json: {schema: {$ref: "#/components/schemas/ReplayResult"}}}
          "400": {$ref: "#/components/responses/Error"}
          "401": {$ref: "#/components/responses/Unauthorized"}
          "404": {$ref: "#/components/responses/Error"}
        """
        try:
            body = ReplayRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            raise body_problem(exc, ReplayRequest) from None
        if body.lead_id is None and not body.dead:
            # the CLI's rule too: a lead, or the dead letters (of one destination)
            raise BadRequest("give lead_id or dead: true (refusing to replay everything)")
        names = [d.name for d in state.runtime.active]
        if body.destination is not None and body.destination not in names:
            known = ", ".join(names) or "none configured"
            raise BadRequest(f"destination: unknown or disabled; known: {known}")
        result = await store.requeue(
            now=time.time(),
            configured=names,
            lead_id=body.lead_id,
            destination=body.destination,
            dead_only=body.dead,
            force=body.force,
        )
        if result.not_found:
            return error(404, "not_found", "no delivery matched")
        if state.engine is not None:
            state.engine.wake()
        await audit.record(
            store,
            request.state.actor,
            "replay",
            body.lead_id or body.destination,
            {
                "dead": body.dead,
                "force": body.force,
                "destination": body.destination,
                "requeued": result.requeued,
            },
        )
        event(
            log,
            "admin_replay",
            lead_id=body.lead_id,
            destination=body.destination,
            dead=body.dead,
            force=body.force,
            requeued=result.requeued,
        )
        return json_response(
            200,
            {
                "requeued": result.requeued,
                "refused_delivered": result.refused_delivered,
            },
        )

    async def metrics(request: Request) -> Response:
        """Prometheus metrics (text exposition format).
        ---
        summary: Prometheus metrics
        operationId: getMetrics
        security: [{adminToken: []}]
        responses:
          "200":
            description: Prometheus text format
            content: {text/plain: {schema: {type: string}}}
          "401": {$ref: "#/components/responses/Unauthorized"}
        """
        body, content_type = await scrape(state.metrics, queue)
        return Response(body, headers={"Content-Type": content_type})

    routes: list[BaseRoute] = [
        Route("/status", protected(status), methods=["GET"]),
        Route("/leads/{lead_id}", protected(lead), methods=["GET"]),
        Route("/deliveries", protected(deliveries), methods=["GET"]),
        Route("/replay", protected(replay), methods=["POST"]),
        Route("/metrics", protected(metrics), methods=["GET"]),
        *lead_routes(state, protected),
        *operator_routes(state, protected),
    ]
    routes += erase_routes(state, protected)
    body = openapi_json(routes, [d.name for d in state.runtime.active])

    async def openapi(request: Request) -> Response:
        # Public (when the admin API is enabled): the description holds no data.
        return Response(body, media_type="application/json")

    return [*routes, Route("/openapi.json", openapi, methods=["GET"])]


def metrics_routes(state: AppState) -> list[BaseRoute]:
    """``GET /metrics`` on the main port behind the admin token (``metrics.port`` unset).

    Without an admin token the main port does not expose metrics at all.
    """
    config = state.runtime.config
    if not config.metrics.enabled or config.metrics.port is not None:
        return []
    for route in admin_routes(state):
        if isinstance(route, Route) and route.path == "/metrics":
            return [Route("/metrics", route.endpoint, methods=["GET"])]
    return []
