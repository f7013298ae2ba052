"""What every admin API handler shares: the token check, the 400 errors and
how a request's parameters and a record's times are read and written."""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from bridge.config_load import format_path
from bridge.durations import parse_duration
from bridge.models import DeliveryRecord
from bridge.operations.search import BadQuery
from bridge.timestamps import iso_utc

Handler = Callable[[Request], Awaitable[Response]]
MAX_LIMIT = 1000


class BadRequest(Exception):
    """A query parameter or body field is wrong; the message names it.

    Messages name fields and say what is expected, never quote the value sent
    (it may be an email address, a token pasted in the wrong place, ...).
    """


def iso(ts: float | None) -> str | None:
    return iso_utc(ts)  # the CLI's --json writes the same


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


def token_index(request: Request, tokens: list[str]) -> int | None:
    """Which of ``tokens`` the request's bearer token is, or None."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return None
    # Compare against every token so the time taken says nothing about which matched.
    matches = [hmac.compare_digest(given.strip().encode(), t.encode()) for t in tokens]
    return matches.index(True) if any(matches) else None


def actor(request: Request) -> str:
    """Who, for the audit log: set by the admin API's token check."""
    return str(getattr(request.state, "actor", "api:unknown"))


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


def query(request: Request, allowed: tuple[str, ...]) -> dict[str, str]:
    q = request.query_params
    unknown = sorted(set(q) - set(allowed))
    if unknown:
        raise BadQuery(f"unknown query parameter; use {', '.join(allowed)}")
    # An empty value is a value (and usually a 400), as the description says:
    # machine clients leave a filter out to mean "none".
    return dict(q.items())


def time_param(text: str | None, name: str) -> float | None:
    if text is None:
        return None
    try:
        return parse_since(text, time.time())
    except BadRequest as exc:
        raise BadQuery(str(exc).replace("since:", f"{name}:", 1)) from None


def int_param(text: str | None, name: str, default: int, maximum: int = 2**62) -> int:
    if text is None:
        return default
    # isascii: "²".isdigit() is true, but int() refuses it
    if not (text.isascii() and text.isdigit()) or int(text) > maximum:
        raise BadQuery(f"{name}: expected a whole number from 0 to {maximum}")
    return int(text)


def page_limit(text: str | None, default: int, maximum: int = 500) -> int:
    """``limit``: rows per page, 1 to ``maximum``."""
    limit = int_param(text, "limit", default)
    if not 1 <= limit <= maximum:
        raise BadQuery(f"limit: expected 1 to {maximum}, got {limit}")
    return limit


def parse_body(model: type[BaseModel], raw: bytes) -> Any:
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise BadQuery(str(body_problem(exc, model))) from None
