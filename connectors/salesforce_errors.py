"""The one place that turns Salesforce's answers and failures into Lead Bridge errors.

Salesforce's error bodies are lists of ``{message, errorCode, fields}``; only the
codes and field names are quoted (the messages quote record values). A refused
single upsert and one failed record of a collection upsert follow one rule
(:func:`_classify_answer`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from bridge.errors import (
    AuthError,
    DeliveryError,
    PermanentError,
    RateLimited,
    RetryableError,
    error_for_status,
)
from bridge.logs import redact
from connectors import _http
from connectors.base import ApiUsage

# Error codes Salesforce answers with a 4xx although a later attempt can succeed.
RETRYABLE_CODES = frozenset({"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE"})
# REQUEST_LIMIT_EXCEEDED means either the org's rolling 24-hour API allowance is spent
# ("TotalRequests Limit exceeded"), which frees up slowly, or too many concurrent
# long-running requests, which clears within a minute.
DAILY_LIMIT_BACKOFF = 3600.0
CONCURRENCY_LIMIT_BACKOFF = 60.0
_MESSAGE_LIMIT = 500
# Salesforce error codes and API field names (Email, Lead_Id__c, npe01__Home__c).
_TOKEN_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.]{0,79}$")


@dataclass(frozen=True)
class _ApiError:
    code: str
    message: str
    fields: tuple[str, ...]


def _api_errors(content: Any) -> list[_ApiError]:
    """Salesforce's error body: a JSON list of ``{message, errorCode, fields}``."""
    if isinstance(content, dict):
        content = [content]
    if not isinstance(content, list):
        return []
    out = []
    for item in content:
        if isinstance(item, dict) and "errorCode" in item:
            fields = item.get("fields") or ()
            out.append(
                _ApiError(
                    str(item["errorCode"]),
                    str(item.get("message") or ""),
                    tuple(str(f) for f in fields) if isinstance(fields, list) else (),
                )
            )
    return out


def _scrub(text: str, hide: Collection[str]) -> str:
    """Remove record values and secrets from a text we quote (exception texts)."""
    for value in sorted(hide, key=len, reverse=True):
        if len(value) >= 3 and value in text:
            text = text.replace(value, "[value]")
    text = redact(text)
    return text if len(text) <= _MESSAGE_LIMIT else text[:_MESSAGE_LIMIT] + "..."


def describe(content: Any) -> tuple[set[str], str]:
    """Salesforce's error codes and the fields they name, never its messages.

    The messages quote record values ("invalid email address: ann@x.io",
    "duplicate value found: ... with id: ...") in forms a scrubber cannot
    predict, so only the codes (``INVALID_EMAIL_ADDRESS``) and field names stay.
    """
    errors = _api_errors(content)
    if not errors:
        return set(), "no error code in the answer"
    parts = []
    for err in errors:
        part = _token(err.code) or "UNKNOWN"
        fields = [f for f in (_token(f) for f in err.fields) if f]
        if fields:
            part += f" (fields: {', '.join(fields)})"
        if err.code == "REQUEST_LIMIT_EXCEEDED":
            part += " (daily API requests)" if _daily_limit(err) else " (concurrent requests)"
        parts.append(part)
    text = "; ".join(parts)
    return {e.code for e in errors}, (
        text if len(text) <= _MESSAGE_LIMIT else text[:_MESSAGE_LIMIT] + "..."
    )


def _token(text: str) -> str:
    """An error code or an API field name as is; anything else is left out."""
    return text if _TOKEN_RE.match(text) else ""


def _daily_limit(err: _ApiError) -> bool:
    return "TotalRequests" in err.message


def classify(exc: BaseException, hide: Collection[str] = ()) -> DeliveryError:
    """The one place that turns simple-salesforce, requests and httpx exceptions into
    :mod:`bridge.errors`. ``hide``: record values to keep out of the stored message."""
    import requests
    from simple_salesforce.exceptions import SalesforceError, SalesforceMoreThanOneRecord

    refused = _http.address_refused(exc)
    if refused is not None:
        return PermanentError(f"Salesforce {refused}")
    if isinstance(exc, SalesforceMoreThanOneRecord):
        matches = len(exc.content) if isinstance(exc.content, list) else "several"
        return PermanentError(
            f"Salesforce HTTP 300: {matches} {exc.resource_name or 'Salesforce'} records share "
            "this lead's external id; deduplicate them in Salesforce",
            status_code=300,
        )
    if isinstance(exc, SalesforceError):
        return _classify_answer(exc.status, exc.content, f"Salesforce HTTP {exc.status}")
    if isinstance(exc, _http.TRANSPORT_ERRORS) and not isinstance(exc, requests.RequestException):
        # The token and limits requests (httpx over the guarded aiohttp transport).
        return _http.classify_transport_error(exc, "Salesforce")
    detail = _scrub(f"{type(exc).__name__}: {exc}", hide)
    if isinstance(exc, requests.Timeout | httpx.TimeoutException):
        return RetryableError(f"Salesforce request timed out ({detail})")
    if isinstance(
        exc, requests.exceptions.InvalidURL | httpx.InvalidURL | httpx.UnsupportedProtocol
    ):
        return PermanentError(f"Salesforce URL cannot be requested ({detail})")
    if isinstance(exc, requests.RequestException | httpx.HTTPError | OSError):
        return RetryableError(f"Salesforce connection failed ({detail})")
    raise TypeError(f"not a Salesforce error: {type(exc).__name__}") from exc


def _classify_answer(status: int, content: Any, prefix: str) -> DeliveryError:
    """Error codes (and the HTTP status) to a Lead Bridge error: one rule for a
    refused single upsert and for one record of a collection upsert."""
    codes, text = describe(content)
    message = f"{prefix}: {text}"
    if "REQUEST_LIMIT_EXCEEDED" in codes:
        daily = any(_daily_limit(e) for e in _api_errors(content))
        wait = DAILY_LIMIT_BACKOFF if daily else CONCURRENCY_LIMIT_BACKOFF
        return RateLimited(message, status_code=status, retry_after=wait)
    if "INVALID_SESSION_ID" in codes or status == 401:
        return AuthError(message, status_code=status)
    if codes & RETRYABLE_CODES:
        return RetryableError(message, status_code=status)
    # 400/404/405 permanent, 403 auth, 429 rate limit, 5xx retryable
    error = error_for_status(status, "")
    if error is None:  # a 2xx cannot raise; keep the request, try again
        return RetryableError(message, status_code=status)
    return type(error)(message, status_code=status)


def record_error(errors: Any) -> DeliveryError:
    """One failed record of a collection upsert (``errors: [{statusCode, message,
    fields}]``), classified as a single upsert refused with those codes (HTTP 400)."""
    content = [
        {"errorCode": e.get("statusCode"), "message": e.get("message"), "fields": e.get("fields")}
        for e in (errors if isinstance(errors, list) else [])
        if isinstance(e, dict)
    ]
    return _classify_answer(400, content, "Salesforce refused the record")


def parse_limit_info(value: str | None) -> ApiUsage | None:
    """``Sforce-Limit-Info: api-usage=18/15000``: the org's API requests in its
    rolling 24 hours, used of allowed."""
    if not value:
        return None
    for part in value.split(","):
        name, _, usage = part.strip().partition("=")
        if name.strip() == "api-usage":
            used, _, limit = usage.partition("/")
            try:
                return ApiUsage(int(used), int(limit), window="rolling 24 h")
            except ValueError:
                return None
    return None


def token_error(status: int, body: Any) -> DeliveryError:
    """A refused token request (``{"error": ..., "error_description": ...}``)."""
    error = description = ""
    if isinstance(body, dict):
        error = str(body.get("error") or "")
        description = str(body.get("error_description") or "")
    text = _scrub(": ".join(p for p in (error, description) if p), ())
    message = f"Salesforce token endpoint HTTP {status}: {text or 'no error description'}"
    if status in (400, 401, 403):  # invalid_client, invalid_grant, inactive_user, ...
        return AuthError(message + "; check the destination's auth settings", status_code=status)
    classified = error_for_status(status, "")
    return type(classified)(message, status_code=status) if classified else RetryableError(message)


def record_values(value: Any) -> list[str]:
    """Every string inside a record, to keep out of stored error messages."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, list | tuple):
        return [text for item in value for text in record_values(item)]
    return []
