"""HubSpot's answers: a batch upsert's results per contact, daily usage headers, and
the one classification of its errors and the SDK's exceptions.

Error texts quote HubSpot's categories, codes and property names only, never
values of the contact (its messages often quote them).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from typing import Any

from bridge.errors import (
    AuthError,
    DeliveryError,
    PermanentError,
    RateLimited,
    RetryableError,
    error_for_status,
    parse_retry_after,
)
from connectors import _http
from connectors.base import ApiUsage, DeliveryResult

# HubSpot's batch upsert takes at most 100 inputs.
MAX_BATCH = 100
# HubSpot does not promise a Retry-After header on 429.
_RATE_LIMIT_FALLBACK = 10.0
# Error texts keep HubSpot's codes and names only; keep dead letters short.
_MAX_MESSAGE = 500
# Categories, error codes, property and scope names: what an error text may quote.
_TOKEN_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,99}$")
_EXISTING_ID = re.compile(r"Existing ID: (\d{1,20})\b")
# Context keys whose values are names, not values of the contact.
_NAMING_CONTEXT = frozenset(
    {"propertyName", "requiredScopes", "requiredGranularScopes", "missingScopes", "objectType"}
)


def contact_key(id_property: str, value: str) -> str:
    # HubSpot matches emails case-insensitively.
    return value.strip().lower() if id_property == "email" else value


def daily_usage(headers: Mapping[str, str]) -> ApiUsage | None:
    """The daily allowance from ``X-HubSpot-RateLimit-Daily`` and ``...-Daily-Remaining``
    (HubSpot sends them to private apps on some tiers; None when absent)."""
    limit = _header(headers, "X-HubSpot-RateLimit-Daily")
    remaining = _header(headers, "X-HubSpot-RateLimit-Daily-Remaining")
    try:
        total, left = int(limit or ""), int(remaining or "")
    except ValueError:
        return None
    if total <= 0 or left < 0:
        return None
    return ApiUsage(used=max(0, total - left), limit=total, window="daily")


def split_batch(
    status: int, data: bytes, id_property: str, keys: list[str]
) -> dict[str, DeliveryResult | DeliveryError]:
    """A batch upsert's answer (200/201, or 207 with ``errors``) per contact key.

    Results are matched by the id property's value they carry; an error by the
    ids in its ``context``. A key missing from the answer is left out (the
    caller resends it alone); an error naming no id fails no lead by itself.
    """
    body = _json_object(status, data)
    wanted = set(keys)
    out: dict[str, DeliveryResult | DeliveryError] = {}
    results = [r for r in body.get("results") or [] if isinstance(r, dict) and r.get("id")]
    for item in results:
        props = item.get("properties")
        value = props.get(id_property) if isinstance(props, dict) else None
        key = contact_key(id_property, str(value)) if value is not None else None
        if key in wanted:
            out[key] = _contact_result(item, status)
    if len(keys) == 1 and not out and len(results) == 1:  # an answer without properties
        out[keys[0]] = _contact_result(results[0], status)
    for key, error in _errors_by_key(body.get("errors"), id_property):
        if key in wanted and key not in out:
            out[key] = _from_body(207, error, {})
    return out


def _json_object(status: int, data: bytes) -> Mapping[str, Any]:
    """The answer's JSON object; without one the upsert may still have happened,
    and retrying an upsert is harmless."""
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise RetryableError(f"HubSpot answered {status} without a JSON body", status_code=status)
    return body


def _contact_result(item: Mapping[str, Any], status: int) -> DeliveryResult:
    detail = "created" if item.get("new") else "updated"
    return DeliveryResult(remote_id=str(item["id"]), status_code=status, detail=detail)


def _errors_by_key(errors: Any, id_property: str) -> list[tuple[str, Mapping[str, Any]]]:
    """(contact key, error) for each id an error of a 207 names in its context."""
    out = []
    for error in errors if isinstance(errors, list) else []:
        context = error.get("context") if isinstance(error, dict) else None
        ids = context.get("ids") if isinstance(context, dict) else None
        for value in ids if isinstance(ids, list) else []:
            out.append((contact_key(id_property, str(value)), error))
    return out


def read_body(response: Any) -> bytes:
    try:
        data: bytes = response.data
    finally:
        response.release_conn()
    return data


def upsert_result(status: int, data: bytes) -> DeliveryResult:
    body = _json_object(status, data)
    results = body.get("results")
    if isinstance(results, list) and results and isinstance(results[0], dict):
        first = results[0]
        if first.get("id"):
            detail = "created" if first.get("new") else "updated"
            return DeliveryResult(remote_id=str(first["id"]), status_code=status, detail=detail)
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        raise _from_body(status, errors[0], {})
    raise RetryableError(f"HubSpot answered {status} without a contact id", status_code=status)


def classify(exc: BaseException) -> DeliveryError:
    """The one place that turns SDK and urllib3 exceptions into Lead Bridge errors."""
    import urllib3

    refused = _http.address_refused(exc)
    if refused is not None:
        return PermanentError(f"HubSpot {refused}")
    if isinstance(exc, urllib3.exceptions.HTTPError):
        reason = getattr(exc, "reason", None) or exc
        return RetryableError(
            f"cannot reach HubSpot: {type(reason).__name__}: {_clip(str(reason))}"
        )
    status = getattr(exc, "status", None)
    if not isinstance(status, int) or status == 0:
        # The SDK reports TLS failures as status 0 with urllib3's text as the reason.
        reason = str(getattr(exc, "reason", "") or "").splitlines()
        return RetryableError(
            f"cannot reach HubSpot: {reason[0] if reason else type(exc).__name__}"
        )
    raw = getattr(exc, "body", None)
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        body = {}
    headers = getattr(exc, "headers", None) or {}
    return _from_body(status, body if isinstance(body, dict) else {}, headers)


def _from_body(status: int, body: Mapping[str, Any], headers: Mapping[str, str]) -> DeliveryError:
    category = str(body.get("category") or body.get("errorType") or "")
    retry_after = parse_retry_after(_header(headers, "Retry-After"))
    if status == 429 or category in ("RATE_LIMIT", "RATE_LIMITS"):
        policy = str(body.get("policyName") or "")
        if policy == "DAILY":
            return RateLimited(
                "HubSpot daily API limit reached; it resets at midnight in the account's time zone",
                status_code=status,
                retry_after=retry_after if retry_after is not None else until_next_hour(),
            )
        return RateLimited(
            f"HubSpot rate limit {policy or 'reached'}: {describe(body)}",
            status_code=status,
            retry_after=retry_after if retry_after is not None else _RATE_LIMIT_FALLBACK,
        )
    if status == 207:
        # One input of a batch failed; the others (none here) went through.
        return PermanentError(f"HubSpot refused the contact: {describe(body)}", status_code=status)
    error = error_for_status(status, describe(body), retry_after=retry_after)
    if error is None:
        return RetryableError(f"HubSpot answered {status} with an error", status_code=status)
    if isinstance(error, AuthError):
        return AuthError(f"HubSpot refused the access token: {error.message}", status_code=status)
    return error


def until_next_hour(now: float | None = None) -> float:
    """Seconds to the next full UTC hour (at least one minute).

    HubSpot resets the daily limit at midnight in the account's time zone, which
    the connector does not know; probing hourly finds the reset within an hour for
    any time zone, at the cost of one refused request per hour.
    """
    current = time.time() if now is None else now
    wait = math.ceil(current / 3600) * 3600 - current
    return max(60.0, wait)


def describe(body: Mapping[str, Any]) -> str:
    """HubSpot's category, error codes and the properties they name; never its
    messages, which quote values ("1,000 was not one of the allowed options")."""
    category = _token(str(body.get("category") or body.get("errorType") or ""))
    parts = _property_errors(str(body.get("message") or ""))
    nested = [e for e in body.get("errors") or [] if isinstance(e, dict)]
    for item in [body, *nested]:
        code = _token(str(item.get("code") or item.get("subCategory") or ""))
        context = _context(item.get("context"))
        part = f"{code} ({context})" if code and context else code or context
        if part and part not in parts:
            parts.append(part)
    existing = _EXISTING_ID.search(str(body.get("message") or ""))
    if existing:  # HubSpot's record id, not a value of the lead
        parts.append(f"existing contact id {existing.group(1)}")
    text = "; ".join(parts) or "no details"
    return _clip(f"{category}: {text}" if category else text)


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def _token(text: str) -> str:
    """An error code, category or property name as is; anything else is left out."""
    return text if _TOKEN_RE.match(text) else ""


def _property_errors(message: str) -> list[str]:
    # "Property values were not valid: [{...,"error":"INVALID_OPTION","name":"numemployees"}]"
    _head, sep, tail = message.partition(": [")
    if not sep:
        return []
    try:
        items = json.loads("[" + tail)
    except ValueError:
        return []
    out = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and _token(str(item.get("name") or "")):
            out.append(f"{item['name']}: {_token(str(item.get('error') or '')) or 'invalid'}")
    return out


def _context(context: Any) -> str:
    """The context's keys; the values only of keys that hold names (properties, scopes)."""
    if not isinstance(context, dict):
        return ""
    parts = []
    for key, value in context.items():
        if not _token(str(key)):
            continue
        values = value if isinstance(value, list) else [value]
        names = [str(v) for v in values if _token(str(v))]
        if str(key) in _NAMING_CONTEXT and names:
            parts.append(f"{key}={','.join(names)}")
        else:
            parts.append(str(key))
    return " ".join(parts)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None
