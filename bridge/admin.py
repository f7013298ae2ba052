"""The admin HTTP API under ``/admin``: status, lead lookup, deliveries, replay,
metrics — the CLI's operations for the dashboard.

Protected by ``admin.tokens`` (``Authorization: Bearer <token>``), separate from
the webhook secrets. With no token configured there are no routes, so every
``/admin`` path answers 404. Each handler's docstring holds its OpenAPI
operation (YAML after ``---``); ``GET /admin/openapi.json`` assembles them.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.schemas import SchemaGenerator

from bridge.admin_ops import SCHEMAS as OPERATOR_SCHEMAS
from bridge.admin_ops import operator_routes
from bridge.config import format_path, parse_duration
from bridge.errors import StoreError
from bridge.intake import error, json_response
from bridge.logs import event
from bridge.metrics_server import QueueGauges, scrape
from bridge.operations import audit
from bridge.operations.search import BadQuery
from bridge.operations.timeline import lead_timeline
from bridge.store.base import STATUSES, AttemptRecord, DeliveryRecord
from bridge.timestamps import iso_utc

if TYPE_CHECKING:
    from bridge.app import AppState

log = logging.getLogger("lead_bridge.admin")

Handler = Callable[[Request], Awaitable[Response]]
MAX_LIMIT = 1000


def _iso(ts: float | None) -> str | None:
    return iso_utc(ts)  # the CLI's --json writes the same


def _delivery(d: DeliveryRecord) -> dict[str, Any]:
    return {
        "id": d.id,
        "lead_id": d.lead_id,
        "destination": d.destination,
        "status": d.status,
        "attempts": d.attempts,
        "leased": d.leased,
        "created_at": _iso(d.created_at),
        "next_attempt_at": _iso(d.next_attempt_at),
        "delivered_at": _iso(d.delivered_at),
        "updated_at": _iso(d.updated_at),
        "last_error": d.last_error,
        "last_status_code": d.last_status_code,
        "remote_id": d.remote_id,
    }


def _attempt(a: AttemptRecord) -> dict[str, Any]:
    return {
        "destination": a.destination,
        "number": a.number,
        "started_at": _iso(a.started_at),
        "duration_ms": round(a.duration * 1000, 1),
        "outcome": a.outcome,
        "error": a.error,
        "status_code": a.status_code,
        "remote_id": a.remote_id,
    }


class BadRequest(Exception):
    """A query parameter or body field is wrong; the message names it.

    Messages name fields and say what is expected, never quote the value sent
    (it may be an email address, a token pasted in the wrong place, ...).
    """


def body_problem(exc: ValidationError, model: type[BaseModel]) -> BadRequest:
    """The first problem of a request body, by field name, without its value.

    A key the model does not know is not named either: it is input too.
    """
    first = exc.errors()[0]
    loc = tuple(first["loc"])
    if first["type"] == "extra_forbidden" or (loc and loc[0] not in model.model_fields):
        return BadRequest(f"body: unknown field; accepted: {', '.join(model.model_fields)}")
    where = format_path(loc) or "body"
    message = str(first["msg"]).replace("Input should be", "expected")
    return BadRequest(f"{where}: {message}")


def parse_since(text: str, now: float) -> float:
    """``30m`` / ``2h`` / ``1d`` ago, or an ISO 8601 time."""
    try:
        return now - float(parse_duration(text))
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(
            "since: expected a duration like 30m, 2h, 1d or an ISO 8601 time"
        ) from None
    if when.tzinfo is None:
        raise BadRequest("since: an ISO 8601 time needs a UTC offset, e.g. 2024-05-01T12:00:00Z")
    return when.timestamp()


def parse_limit(text: str | None) -> int:
    if text is None:
        return 100
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_LIMIT:
        raise BadRequest(f"limit: expected a whole number from 1 to {MAX_LIMIT}")
    return int(text)


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    lead_id: str | None = Field(None, min_length=1, max_length=255)
    destination: str | None = Field(None, min_length=1)
    dead: bool = False
    force: bool = False


def check_token(request: Request, tokens: list[str]) -> bool:
    return token_index(request, tokens) is not None


def token_index(request: Request, tokens: list[str]) -> int | None:
    """Which of ``tokens`` the request's bearer token is, or None."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return None
    # Compare against every token so the time taken says nothing about which matched.
    matches = [hmac.compare_digest(given.strip().encode(), t.encode()) for t in tokens]
    return matches.index(True) if any(matches) else None


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
                    "oldest_pending_at": _iso(oldest),
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
                    "received_at": _iso(record.received_at),
                    "created": record.created,
                    "url": record.url,
                    "purged": record.payload is None,
                    "payload": timeline.payload,
                },
                "deliveries": [_delivery(d) for d in deliveries],
                "attempts": [_attempt(a) for a in attempts],
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
        return json_response(200, {"deliveries": [_delivery(d) for d in rows]})

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
        *operator_routes(state, protected),
    ]
    from bridge.admin_privacy import SCHEMAS, erase_routes

    routes += erase_routes(state, protected)
    document = SchemaGenerator(
        with_schemas(
            OPENAPI_BASE,
            {
                **SCHEMAS,
                "ReplayRequest": replay_request_schema([d.name for d in state.runtime.active]),
            },
        )
    ).get_schema([Mount("/admin", routes=routes)])
    body = json.dumps(document, indent=2).encode()

    async def openapi(request: Request) -> Response:
        # Public (when the admin API is enabled): the description holds no data.
        return Response(body, media_type="application/json")

    return [*routes, Route("/openapi.json", openapi, methods=["GET"])]


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def replay_request_schema(destinations: list[str]) -> dict[str, Any]:
    """ReplayRequest as the handler checks it: a lead_id or dead: true, and a
    destination among the configured ones (so the description is exact)."""
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "lead_id": _nullable({"type": "string", "minLength": 1, "maxLength": 255}),
            "destination": _nullable({"enum": destinations} if destinations else {"not": {}}),
            "dead": {"type": "boolean", "default": False},
            "force": {"type": "boolean", "default": False},
        },
        "anyOf": [
            {"required": ["lead_id"], "properties": {"lead_id": {"type": "string"}}},
            {"required": ["dead"], "properties": {"dead": {"const": True}}},
        ],
    }


def with_schemas(base: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """``base`` with more component schemas (from the modules that add routes)."""
    components = base["components"]
    return {**base, "components": {**components, "schemas": {**components["schemas"], **schemas}}}


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


_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}
_TIME = {"type": ["string", "null"], "format": "date-time"}

OPENAPI_BASE: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Lead Bridge admin API",
        "version": "1",
        "description": "Operator API: the CLI's status, show, deliveries, replay, search, "
        "dead letters (preview, bulk replay), overview, drift, map, check-credentials, "
        "test-send and audit over HTTP. "
        "Authenticate with `Authorization: Bearer <token>` (admin.tokens).",
    },
    "components": {
        "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
        "responses": {
            "Unauthorized": {
                "description": "Missing or wrong admin token",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
            "Error": {
                "description": "An error naming what is wrong",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            },
        },
        "schemas": {
            "Error": _ERROR,
            "Status": {
                "type": "object",
                "properties": {
                    "leads": {"type": "integer"},
                    "quarantined": {"type": "integer"},
                    "undelivered": {"type": "integer"},
                    "unrouted": {"type": "integer"},
                    "workers": {"type": "boolean"},
                    "destinations": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "name": {"type": "string"},
                                "type": {"type": ["string", "null"]},
                                "configured": {"type": "boolean"},
                                "enabled": {"type": "boolean"},
                                "counts": {
                                    "type": "object",
                                    "additionalProperties": {"type": "integer"},
                                },
                                "in_flight": {"type": "integer"},
                                "oldest_pending_at": _TIME,
                                "oldest_pending_age_seconds": {"type": ["number", "null"]},
                            },
                        },
                    },
                },
            },
            "Delivery": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "lead_id": {"type": "string"},
                    "destination": {"type": "string"},
                    "status": {"type": "string", "enum": list(STATUSES)},
                    "attempts": {"type": "integer"},
                    "leased": {"type": "boolean"},
                    "created_at": _TIME,
                    "next_attempt_at": _TIME,
                    "delivered_at": _TIME,
                    "updated_at": _TIME,
                    "last_error": {"type": ["string", "null"]},
                    "last_status_code": {"type": ["integer", "null"]},
                    "remote_id": {"type": ["string", "null"]},
                },
            },
            "Attempt": {
                "type": "object",
                "properties": {
                    "destination": {"type": "string"},
                    "number": {"type": "integer"},
                    "started_at": _TIME,
                    "duration_ms": {"type": "number"},
                    "outcome": {"type": "string"},
                    "error": {"type": ["string", "null"]},
                    "status_code": {"type": ["integer", "null"]},
                    "remote_id": {"type": ["string", "null"]},
                },
            },
            "LeadDetail": {
                "type": "object",
                "properties": {
                    "lead": {
                        "type": "object",
                        "properties": {
                            "id": {"type": "string"},
                            "received_at": _TIME,
                            "created": {"type": ["string", "null"]},
                            "url": {"type": ["string", "null"]},
                            "purged": {"type": "boolean"},
                            "payload": {"description": "the lead as received; null once purged"},
                        },
                    },
                    "deliveries": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/Delivery"},
                    },
                    "attempts": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/Attempt"},
                    },
                    "mapped": {
                        "type": "object",
                        "description": "per destination, under the current config: whether "
                        "`when` matches, and the mapped `record` or the mapping `error`",
                        "additionalProperties": {
                            "type": "object",
                            "properties": {
                                "when": {"type": "boolean"},
                                "record": {"type": "object"},
                                "error": {"type": "string"},
                            },
                        },
                    },
                },
            },
            **OPERATOR_SCHEMAS,
            "ReplayResult": {
                "type": "object",
                "properties": {
                    "requeued": {"type": "integer"},
                    "refused_delivered": {
                        "type": "integer",
                        "description": "delivered rows left alone (set force: true to resend)",
                    },
                },
            },
        },
    },
}
