"""The admin API's OpenAPI 3.1 document (``GET /admin/openapi.json``).

Each handler's docstring holds its operation (YAML after ``---``); the
components they refer to are declared here once, next to the document that
assembles them. The request bodies checked by pydantic models are described by
those models; the others are written out to say exactly what the handler
accepts and answers.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.routing import BaseRoute, Mount
from starlette.schemas import SchemaGenerator

from bridge.admin.leads import BulkReplayRequest, DeadLetterSelection
from bridge.admin.operator import MapRequest
from bridge.models import STATUSES
from bridge.operations.dead_letters import ERROR_CLASSES
from bridge.operations.search import SEARCH_STATUSES


def openapi_json(routes: list[BaseRoute], destinations: list[str]) -> bytes:
    """The document for the routes mounted at ``/admin``."""
    base = OPENAPI_BASE
    components = base["components"]
    schemas = {**components["schemas"], "ReplayRequest": replay_request_schema(destinations)}
    document = SchemaGenerator(
        {**base, "components": {**components, "schemas": schemas}}
    ).get_schema([Mount("/admin", routes=routes)])
    return json.dumps(document, indent=2).encode()


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


_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}
_TIME = {"type": ["string", "null"], "format": "date-time"}

# The store's counts and a destination's identity, in the status and the overview.
_STORE_COUNTS = {
    "leads": {"type": "integer"},
    "quarantined": {"type": "integer"},
    "undelivered": {"type": "integer"},
    "unrouted": {"type": "integer"},
}
_DESTINATION = {
    "name": {"type": "string"},
    "type": {"type": ["string", "null"]},
    "configured": {"type": "boolean"},
    "enabled": {"type": "boolean"},
}
_STATES = {
    "type": "object",
    "additionalProperties": {"type": "string", "enum": list(SEARCH_STATUSES)},
}

_COUNT = {"type": "integer", "minimum": 0}

_TARGET: dict[str, Any] = {
    "email": {
        "anyOf": [
            {"type": "string", "minLength": 3, "maxLength": 320, "pattern": "@"},
            {"type": "null"},
        ]
    },
    "lead_id": {"anyOf": [{"type": "string", "minLength": 1, "maxLength": 255}, {"type": "null"}]},
}
# Exactly one of email and lead_id, as the handler checks it.
_ONE_OF = [
    {"required": ["email"], "properties": {"email": {"type": "string"}}},
    {"required": ["lead_id"], "properties": {"lead_id": {"type": "string"}}},
]

_OPERATOR: dict[str, Any] = {
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
            **_STORE_COUNTS,
            "destinations": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        **_DESTINATION,
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

_PRIVACY: dict[str, Any] = {
    "EraseTarget": {
        "type": "object",
        "additionalProperties": False,
        "properties": _TARGET,
        "oneOf": _ONE_OF,
    },
    "EraseRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["confirm"],
        "properties": {
            **_TARGET,
            "confirm": {
                "const": True,
                "description": "must be true: an erasure cannot be undone (preview first)",
            },
        },
        "oneOf": _ONE_OF,
    },
    "EraseReport": {
        "type": "object",
        "required": [
            "leads",
            "deliveries",
            "attempts",
            "quarantine",
            "errors_scrubbed",
            "lead_ids",
            "dry_run",
            "files_clean",
        ],
        "properties": {
            "leads": _COUNT,
            "deliveries": _COUNT,
            "attempts": _COUNT,
            "quarantine": _COUNT,
            "errors_scrubbed": {
                **_COUNT,
                "description": "other leads' delivery errors that quoted the address",
            },
            "lead_ids": {"type": "array", "items": {"type": "string"}},
            "dry_run": {"type": "boolean"},
            "files_clean": {
                "type": "boolean",
                "description": "false: erased, but the old bytes may remain in SQLite's WAL "
                "until the next checkpoint (erase again to retry it)",
            },
        },
    },
}

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
                    **_STORE_COUNTS,
                    "workers": {"type": "boolean"},
                    "destinations": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                **_DESTINATION,
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
            **_OPERATOR,
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
            **_PRIVACY,
        },
    },
}
