"""The admin API's lead finding: search, and the dead letters with their
preview and bulk replay. Each handler parses its parameters and renders one
:mod:`bridge.operations` function; :func:`bridge.admin.routes.admin_routes`
mounts them behind the admin token. Each docstring holds the OpenAPI operation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bridge.admin.http import (
    Handler,
    actor,
    delivery_json,
    int_param,
    iso,
    parse_body,
    query,
    time_param,
)
from bridge.intake import error, json_response
from bridge.operations.dead_letters import (
    ERROR_CLASSES,
    DeadLetter,
    DeadLetterQuery,
    list_dead_letters,
    preview_replay,
    replay_dead_letters,
)
from bridge.operations.search import LeadQuery, search_leads

if TYPE_CHECKING:
    from bridge.state import AppState


def dead_letter_json(item: DeadLetter) -> dict[str, Any]:
    return {
        **delivery_json(item.delivery),
        "last_error": item.error,
        "error_class": item.error_class,
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


def _selection(body: DeadLetterSelection) -> DeadLetterQuery:
    return DeadLetterQuery(
        destination=body.destination,
        error_class=body.error_class,
        since=time_param(body.since, "since"),
        until=time_param(body.until, "until"),
    )


def lead_routes(state: AppState, protected: Callable[[Handler], Handler]) -> list[BaseRoute]:
    """The routes, each wrapped by ``protected`` (token check, error mapping)."""
    store = state.store

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
        q = query(
            request,
            ("lead_id", "email", "phone", "from", "to", "status", "destination", "limit", "cursor"),
        )
        page = await search_leads(
            store,
            LeadQuery(
                lead_id=q.get("lead_id"),
                email=q.get("email"),
                phone=q.get("phone"),
                received_from=time_param(q.get("from"), "from"),
                received_to=time_param(q.get("to"), "to"),
                status=q.get("status"),
                destination=q.get("destination"),
            ),
            limit=int_param(q.get("limit"), "limit", 50),
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
        q = query(request, ("destination", "error_class", "since", "until", "limit", "cursor"))
        page = await list_dead_letters(
            store,
            DeadLetterQuery(
                destination=q.get("destination"),
                error_class=q.get("error_class"),
                since=time_param(q.get("since"), "since"),
                until=time_param(q.get("until"), "until"),
            ),
            limit=int_param(q.get("limit"), "limit", 50),
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
        body = parse_body(DeadLetterSelection, await request.body())
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
        body = parse_body(BulkReplayRequest, await request.body())
        requeued = await replay_dead_letters(
            store, _selection(body), actor=actor(request), ids=body.ids, as_of=body.as_of
        )
        if state.engine is not None and requeued:
            state.engine.wake()
        return json_response(200, {"requeued": requeued})

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
    ]
