"""The admin API's operator endpoints (search, dead letters with preview and
bulk replay, overview, drift, mapping playground, credentials check, test
lead, audit log). Each handler parses its parameters and renders one
:mod:`bridge.operations` function; :func:`bridge.admin.admin_routes` mounts
them behind the admin token. Each docstring holds the OpenAPI operation.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bridge.intake import error, json_response
from bridge.operations import audit
from bridge.operations.credentials import check_destination
from bridge.operations.dead_letters import (
    ERROR_CLASSES,
    DeadLetter,
    DeadLetterQuery,
    list_dead_letters,
    preview_replay,
    replay_dead_letters,
)
from bridge.operations.drift import DriftKey, drift_keys
from bridge.operations.mapping import evaluate
from bridge.operations.overview import LocalEngineView, overview, unrouted_leads
from bridge.operations.search import SEARCH_STATUSES, BadQuery, LeadQuery, search_leads
from bridge.operations.testsend import send_test_lead
from bridge.store.base import DeliveryRecord
from bridge.timestamps import iso_utc

if TYPE_CHECKING:
    from bridge.app import AppState

Handler = Callable[[Request], Awaitable[Response]]


def iso(ts: float | None) -> str | None:
    return iso_utc(ts)  # the CLI's --json writes the same


def actor(request: Request) -> str:
    """Who, for the audit log: set by the admin API's token check."""
    return str(getattr(request.state, "actor", "api:unknown"))


def _query(request: Request, allowed: tuple[str, ...]) -> dict[str, str]:
    q = request.query_params
    unknown = sorted(set(q) - set(allowed))
    if unknown:
        raise BadQuery(f"unknown query parameter; use {', '.join(allowed)}")
    # An empty value is a value (and usually a 400), as the description says:
    # machine clients leave a filter out to mean "none".
    return dict(q.items())


def _time(text: str | None, name: str) -> float | None:
    from bridge.admin import BadRequest, parse_since

    if text is None:
        return None
    try:
        return parse_since(text, time.time())
    except BadRequest as exc:
        raise BadQuery(str(exc).replace("since:", f"{name}:", 1)) from None


def _int(text: str | None, name: str, default: int, maximum: int = 2**62) -> int:
    if text is None:
        return default
    # isascii: "²".isdigit() is true, but int() refuses it
    if not (text.isascii() and text.isdigit()) or int(text) > maximum:
        raise BadQuery(f"{name}: expected a whole number from 0 to {maximum}")
    return int(text)


def _body(model: type[BaseModel], raw: bytes) -> Any:
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        from bridge.admin import body_problem

        raise BadQuery(str(body_problem(exc, model))) from None


def delivery_json(d: DeliveryRecord) -> dict[str, Any]:
    return {
        "id": d.id,
        "lead_id": d.lead_id,
        "destination": d.destination,
        "status": d.status,
        "attempts": d.attempts,
        "leased": d.leased,
        "created_at": iso(d.created_at),
        "next_attempt_at": iso(d.next_attempt_at),
        "delivered_at": iso(d.delivered_at),
        "updated_at": iso(d.updated_at),
        "last_error": d.last_error,
        "last_status_code": d.last_status_code,
        "remote_id": d.remote_id,
    }


def dead_letter_json(item: DeadLetter) -> dict[str, Any]:
    return {
        **delivery_json(item.delivery),
        "last_error": item.error,
        "error_class": item.error_class,
    }


def drift_json(k: DriftKey) -> dict[str, Any]:
    return {
        "key": k.key,
        "first_seen": iso(k.first_seen),
        "last_seen": iso(k.last_seen),
        "count": k.count,
        "destinations": k.destinations,
    }


def _whole_number(value: Any) -> Any:
    # JSON has one number type: 3 and 3.0 are the same integer, "3" and true are not.
    if isinstance(value, str | bool):
        raise ValueError("expected a whole number")
    return value


# A delivery id: constraints before the validator, so the schema says minimum/maximum.
DeliveryId = Annotated[int, Field(ge=1, le=2**62, strict=False), BeforeValidator(_whole_number)]

# A time filter as the handlers parse it (bridge.admin.parse_since), described
# exactly so that the OpenAPI document and the handler agree.
TIME_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": "^ *[0-9]+([.][0-9]+)? *(ms|s|m|h|d)? *$"},
        {"type": "string", "format": "date-time"},
        {"type": "null"},
    ]
}


class DeadLetterSelection(BaseModel):
    """Which dead letters: the filter, optionally narrowed to chosen delivery ids."""

    model_config = ConfigDict(extra="forbid", strict=True)

    destination: str | None = Field(None, min_length=1)
    error_class: str | None = Field(
        None,
        description=f"one of {', '.join(ERROR_CLASSES)}",
        json_schema_extra={"enum": [*ERROR_CLASSES, None]},
    )
    since: str | None = Field(
        None,
        description="died within a duration (2h) or since a time",
        json_schema_extra=TIME_SCHEMA,
    )
    until: str | None = Field(
        None, description="died before a duration ago or a time", json_schema_extra=TIME_SCHEMA
    )
    ids: list[DeliveryId] | None = Field(None, min_length=1, max_length=10_000)


class BulkReplayRequest(DeadLetterSelection):
    as_of: float | None = Field(
        None, description="the preview's as_of: dead letters that died later are left alone"
    )


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


def _selection(body: DeadLetterSelection) -> DeadLetterQuery:
    return DeadLetterQuery(
        destination=body.destination,
        error_class=body.error_class,
        since=_time(body.since, "since"),
        until=_time(body.until, "until"),
    )


def operator_routes(state: AppState, protected: Callable[[Handler], Handler]) -> list[BaseRoute]:
    """The routes, each wrapped by ``protected`` (token check, error mapping)."""
    store, runtime = state.store, state.runtime

    async def search(request: Request) -> Response:
        r"""Search leads by id, email, phone, received time, delivery status, destination.
        ---
        summary: Search leads
        operationId: searchLeads
        security: [{adminToken: []}]
        parameters:
          - {name: lead_id, in: query, schema: {type: string}}
          - {name: email, in: query, description: exact address (case-insensitive), schema: {type: string, pattern: '\S'}}
          - {name: phone, in: query, description: digits are compared, schema: {type: string, pattern: '[0-9]'}}
          - {name: from, in: query, description: received since (30m, 2h, 1d or ISO 8601), schema: {anyOf: [{type: string, pattern: '^ *[0-9]+([.][0-9]+)? *(ms|s|m|h|d)? *$'}, {type: string, format: date-time}]}}
          - {name: to, in: query, description: received before (duration ago or ISO 8601), schema: {anyOf: [{type: string, pattern: '^ *[0-9]+([.][0-9]+)? *(ms|s|m|h|d)? *$'}, {type: string, format: date-time}]}}
          - {name: status, in: query, schema: {type: string, enum: [pending, retrying, delivered, dead, skipped]}}
          - {name: destination, in: query, schema: {type: string}}
          - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 500, default: 50}}
          - {name: cursor, in: query, description: next_cursor of the previous page, schema: {type: string, pattern: '^[A-Za-z0-9_-]+$'}}
        responses:
          "200":
            description: A page of leads, newest first
            content: {application/json: {schema: {$ref: "#/components/schemas/LeadPage"}}}
          "400": {$ref: "#/components/responses/Error"}
          "401": {$ref: "#/components/responses/Unauthorized"}
        """
        q = _query(
            request,
            ("lead_id", "email", "phone", "from", "to", "status", "destination", "limit", "cursor"),
        )
        page = await search_leads(
            store,
            LeadQuery(
                lead_id=q.get("lead_id"),
                email=q.get("email"),
                phone=q.get("phone"),
                received_from=_time(q.get("from"), "from"),
                received_to=_time(q.get("to"), "to"),
                status=q.get("status"),
                destination=q.get("destination"),
            ),
            limit=_int(q.get("limit"), "limit", 50),
            cursor=q.get("cursor"),
        )
        return json_response(
            200,
            {
                "leads": [
                    {
                        "id": s.id,
                        "received_at": iso(s.received_at),
                        "purged": s.purged,
                        "test": s.test,
                        "deliveries": s.deliveries,
                    }
                    for s in page.leads
                ],
                "next_cursor": page.next_cursor,
                "total": page.total,
                "total_capped": page.total_capped,
            },
        )

    async def dead_letters(request: Request) -> Response:
        """Dead letters, most recently died first, with their error class.
        ---
        summary: List dead letters
        operationId: listDeadLetters
        security: [{adminToken: []}]
        parameters:
          - {name: destination, in: query, schema: {type: string}}
          - {name: error_class, in: query, schema: {type: string, enum: [auth, mapping, rate_limited, http_4xx, http_5xx, timeout, connection, payload_gone, other]}}
          - {name: since, in: query, description: died within a duration or since an ISO 8601 time, schema: {anyOf: [{type: string, pattern: '^ *[0-9]+([.][0-9]+)? *(ms|s|m|h|d)? *$'}, {type: string, format: date-time}]}}
          - {name: until, in: query, description: died before, schema: {anyOf: [{type: string, pattern: '^ *[0-9]+([.][0-9]+)? *(ms|s|m|h|d)? *$'}, {type: string, format: date-time}]}}
          - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 500, default: 50}}
          - {name: cursor, in: query, description: next_cursor of the previous page, schema: {type: string, pattern: '^[A-Za-z0-9_-]+$'}}
        responses:
          "200":
            description: A page of dead letters and the total matching
            content: {application/json: {schema: {$ref: "#/components/schemas/DeadLetterPage"}}}
          "400": {$ref: "#/components/responses/Error"}
          "401": {$ref: "#/components/responses/Unauthorized"}
        """
        q = _query(request, ("destination", "error_class", "since", "until", "limit", "cursor"))
        page = await list_dead_letters(
            store,
            DeadLetterQuery(
                destination=q.get("destination"),
                error_class=q.get("error_class"),
                since=_time(q.get("since"), "since"),
                until=_time(q.get("until"), "until"),
            ),
            limit=_int(q.get("limit"), "limit", 50),
            cursor=q.get("cursor"),
        )
        return json_response(
            200,
            {
                "dead_letters": [dead_letter_json(d) for d in page.items],
                "next_cursor": page.next_cursor,
                "total": page.total,
            },
        )

    async def preview(request: Request) -> Response:
        """How many dead deliveries a bulk replay of this selection would requeue.
        ---
        summary: Preview a bulk replay
        operationId: previewBulkReplay
        security: [{adminToken: []}]
        requestBody:
          required: true
          content: {application/json: {schema: {$ref: "#/components/schemas/DeadLetterSelection"}}}
        responses:
          "200":
            description: The count, per destination, and the as_of time to replay with
            content: {application/json: {schema: {$ref: "#/components/schemas/ReplayPreview"}}}
          "400": {$ref: "#/components/responses/Error"}
          "401": {$ref: "#/components/responses/Unauthorized"}
        """
        body = _body(DeadLetterSelection, await request.body())
        result = await preview_replay(store, _selection(body), ids=body.ids)
        return json_response(200, asdict(result))

    async def bulk_replay(request: Request) -> Response:
        """Requeue the selected dead letters (ids, or all matching up to as_of); audited.
        ---
        summary: Bulk replay dead letters
        operationId: bulkReplay
        security: [{adminToken: []}]
        requestBody:
          required: true
          content: {application/json: {schema: {$ref: "#/components/schemas/BulkReplayRequest"}}}
        responses:
          "200":
            description: How many deliveries were requeued
            content: {application/json: {schema: {type: object, properties: {requeued: {type: integer}}}}}
          "400": {$ref: "#/components/responses/Error"}
          "401": {$ref: "#/components/responses/Unauthorized"}
        """
        body = _body(BulkReplayRequest, await request.body())
        requeued = await replay_dead_letters(
            store, _selection(body), actor=actor(request), ids=body.ids, as_of=body.as_of
        )
        if state.engine is not None and requeued:
            state.engine.wake()
        return json_response(200, {"requeued": requeued})

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
        q = _query(request, ("limit",))
        limit = _int(q.get("limit"), "limit", 50)
        if not 1 <= limit <= 500:
            raise BadQuery(f"limit: expected 1 to 500, got {limit}")
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
        body = _body(MapRequest, await request.body())
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
        q = _query(request, ("limit", "before_id", "action"))
        limit = _int(q.get("limit"), "limit", 100)
        if not 1 <= limit <= 500:
            raise BadQuery(f"limit: expected 1 to 500, got {limit}")
        before = q.get("before_id")
        entries = await audit.list_audit(
            store,
            limit=limit,
            before_id=_int(before, "before_id", 0) if before is not None else None,
            action=q.get("action"),
        )
        return json_response(200, {"entries": [{**asdict(e), "at": iso(e.at)} for e in entries]})

    async def empty_lead_id(request: Request) -> Response:
        # GET /admin/leads/ is the lead lookup with an empty id: answered as such
        # (401 without the token, else 404), not redirected to the search.
        return error(404, "not_found", "no lead with this id")

    return [
        Route("/leads", protected(search), methods=["GET"]),
        Route("/leads/", protected(empty_lead_id), methods=["GET"], include_in_schema=False),
        Route("/dead-letters", protected(dead_letters), methods=["GET"]),
        Route("/dead-letters/preview", protected(preview), methods=["POST"]),
        Route("/dead-letters/replay", protected(bulk_replay), methods=["POST"]),
        Route("/overview", protected(overview_), methods=["GET"]),
        Route("/drift", protected(drift), methods=["GET"]),
        Route("/unrouted", protected(unrouted), methods=["GET"]),
        Route("/map", protected(map_), methods=["POST"]),
        Route("/destinations/{name}/check", protected(check), methods=["POST"]),
        Route("/destinations/{name}/test", protected(test_send), methods=["POST"]),
        Route("/audit", protected(audit_log), methods=["GET"]),
    ]


_TIME = {"type": ["string", "null"], "format": "date-time"}
_STATES = {
    "type": "object",
    "additionalProperties": {"type": "string", "enum": list(SEARCH_STATUSES)},
}

SCHEMAS: dict[str, Any] = {
    "LeadPage": {
        "type": "object",
        "properties": {
            "leads": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string"},
                        "received_at": _TIME,
                        "purged": {"type": "boolean"},
                        "test": {"type": "boolean"},
                        "deliveries": _STATES,
                    },
                },
            },
            "next_cursor": {"type": ["string", "null"]},
            "total": {"type": "integer"},
            "total_capped": {"type": "boolean"},
        },
    },
    "DeadLetterPage": {
        "type": "object",
        "properties": {
            "dead_letters": {
                "type": "array",
                "items": {
                    "allOf": [
                        {"$ref": "#/components/schemas/Delivery"},
                        {
                            "type": "object",
                            "properties": {
                                "error_class": {"type": "string", "enum": list(ERROR_CLASSES)}
                            },
                        },
                    ]
                },
            },
            "next_cursor": {"type": ["string", "null"]},
            "total": {"type": "integer"},
        },
    },
    "DeadLetterSelection": DeadLetterSelection.model_json_schema(),
    "BulkReplayRequest": BulkReplayRequest.model_json_schema(),
    "MapRequest": MapRequest.model_json_schema(),
    "ReplayPreview": {
        "type": "object",
        "properties": {
            "count": {"type": "integer"},
            "as_of": {"type": "number", "description": "pass to the replay as as_of"},
            "by_destination": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
    },
    "DriftKey": {
        "type": "object",
        "properties": {
            "key": {"type": "string"},
            "first_seen": _TIME,
            "last_seen": _TIME,
            "count": {"type": "integer"},
            "destinations": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Overview": {
        "type": "object",
        "properties": {
            "generated_at": _TIME,
            "leads": {"type": "integer"},
            "quarantined": {"type": "integer"},
            "unrouted": {"type": "integer"},
            "undelivered": {"type": "integer"},
            "destinations": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "type": {"type": ["string", "null"]},
                        "configured": {"type": "boolean"},
                        "enabled": {"type": "boolean"},
                        "delivered": {"type": "integer"},
                        "pending": {"type": "integer"},
                        "retrying": {"type": "integer"},
                        "dead": {"type": "integer"},
                        "skipped": {"type": "integer"},
                        "in_flight": {"type": "integer"},
                        "oldest_pending_age": {"type": ["number", "null"]},
                        "last_error": {"type": ["string", "null"]},
                        "last_error_at": _TIME,
                        "per_hour": {"type": "array", "items": {"type": "integer"}},
                        "rate_per_second": {"type": ["number", "null"]},
                        "paused_until": _TIME,
                        "worker_running": {"type": ["boolean", "null"]},
                        "pause_reason": {"type": ["string", "null"]},
                    },
                },
            },
            "drift": {"type": "array", "items": {"$ref": "#/components/schemas/DriftKey"}},
        },
    },
    "CheckResult": {
        "type": "object",
        "properties": {
            "ok": {"type": ["boolean", "null"]},
            "detail": {"type": "string"},
            "status_code": {"type": ["integer", "null"]},
        },
    },
    "TestSendResult": {
        "type": "object",
        "properties": {
            "ok": {"type": "boolean"},
            "destination": {"type": "string"},
            "lead_id": {"type": "string"},
            "matched": {"type": "boolean"},
            "record": {"type": ["object", "null"]},
            "status_code": {"type": ["integer", "null"]},
            "remote_id": {"type": ["string", "null"]},
            "error": {"type": ["string", "null"]},
            "duration_ms": {"type": "number"},
        },
    },
    "AuditEntry": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "at": _TIME,
            "actor": {"type": "string"},
            "action": {"type": "string"},
            "target": {"type": ["string", "null"]},
            "detail": {"type": "object"},
        },
    },
}
