"""A local fake of HubSpot's contacts batch upsert, for tests on 127.0.0.1.

Usage::

    with FakeHubSpot(access_token="pat-test") as hs:      # plain HTTP
        hs.queue(rate_limited("SECONDLY"), server_error())  # the next two answers
        ...  # point the connector at host=hs.url
        hs.requests[0].body["inputs"][0]["properties"]

* ``FakeHubSpot(access_token=None, ssl_context=None)``: ``access_token`` set means a
  request without ``Authorization: Bearer <token>`` gets HubSpot's 401; an
  ``ssl.SSLContext`` (e.g. from ``trustme``) serves HTTPS.
* ``POST /crm/v3/objects/contacts/batch/upsert`` with no queued answer behaves like
  HubSpot: each input creates a contact (``new: true``) or updates the one already
  stored under the same ``idProperty`` value (``new: false``); answer 200 with
  ``results[]`` of ``{id, properties, createdAt, updatedAt, new, archived}``.
* ``queue(*responses)`` queues :class:`FakeResponse` answers used first, in order;
  the helpers below build HubSpot's real error shapes (``validation_error``,
  ``conflict``, ``rate_limited``, ``unauthorized``, ``missing_scopes``,
  ``server_error``, ``multi_status_error``, ``created``).
* ``requests`` records every request (method, path, headers, parsed JSON body);
  ``contacts`` holds the stored contacts keyed by ``(idProperty, id)``.
* A queued ``FakeResponse(delay=...)`` holds the answer back (for timeout tests);
  ``stop()`` releases held answers at once.
* Batches as HubSpot takes them: at most 100 inputs, no id twice (400
  VALIDATION_ERROR otherwise); ``reject_input(id, ...)`` makes that input fail
  while the others go through (207 with ``errors[]`` naming it in
  ``context.ids``).
* ``limit_per_10s=N``: a rolling 10-second request limit on the upsert path
  (429 TEN_SECONDLY_ROLLING beyond it) with ``X-HubSpot-RateLimit-Max/-Remaining/
  -Interval-Milliseconds`` headers; ``daily_limit=N`` adds
  ``X-HubSpot-RateLimit-Daily/-Daily-Remaining`` (``daily_used`` counts).
  ``upsert_calls`` counts upsert requests that were answered.
"""

from __future__ import annotations

import itertools
import json
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

UPSERT_PATH = "/crm/v3/objects/contacts/batch/upsert"
TOKEN_INFO_PATH = "/oauth/v2/private-apps/get/access-token-info"
HUB_ID = 4242


@dataclass
class FakeResponse:
    status: int
    body: Any = None  # JSON-serialisable, or bytes sent as they are
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to hold the answer back


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _correlation() -> str:
    return "d6f1c8e2-0000-4000-8000-000000000000"


def validation_error(
    name: str = "numemployees", value: str = "1-10", code: str = "INVALID_OPTION"
) -> FakeResponse:
    """HubSpot's 400 for a property value it refuses (JSON embedded in ``message``)."""
    detail = [
        {
            "isValid": False,
            "message": f'{value} was not one of the allowed options: [label: "1-5"\nvalue: '
            f'"1-5"\ndisplay_order: 0\nhidden: false\nread_only: false\n]',
            "error": code,
            "name": name,
            "localizedErrorMessage": f"{value} was not one of the allowed options",
        }
    ]
    return FakeResponse(
        400,
        {
            "status": "error",
            "message": f"Property values were not valid: {json.dumps(detail)}",
            "correlationId": _correlation(),
            "category": "VALIDATION_ERROR",
        },
    )


def conflict(existing_id: str = "1234") -> FakeResponse:
    return FakeResponse(
        409,
        {
            "status": "error",
            "message": f"Contact already exists. Existing ID: {existing_id}",
            "correlationId": _correlation(),
            "category": "CONFLICT",
        },
    )


def rate_limited(policy: str = "SECONDLY", retry_after: str | None = None) -> FakeResponse:
    """429 as HubSpot sends it: ``policyName`` SECONDLY, TEN_SECONDLY_ROLLING or DAILY."""
    words = {"SECONDLY": "secondly", "TEN_SECONDLY_ROLLING": "ten secondly rolling"}
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return FakeResponse(
        429,
        {
            "status": "error",
            "message": f"You have reached your {words.get(policy, policy.lower())} limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": _correlation(),
            "policyName": policy,
            "groupName": "publicapi:private-app:1:1",
        },
        headers,
    )


def unauthorized() -> FakeResponse:
    return FakeResponse(
        401,
        {
            "status": "error",
            "message": "Authentication credentials not found. This API supports OAuth 2.0 "
            "authentication and you can find more details at https://developers.hubspot.com/",
            "correlationId": _correlation(),
            "category": "INVALID_AUTHENTICATION",
        },
    )


def missing_scopes() -> FakeResponse:
    return FakeResponse(
        403,
        {
            "status": "error",
            "message": "This app hasn't been granted all required scopes to make this call.",
            "correlationId": _correlation(),
            "errors": [
                {
                    "message": "One or more of the following scopes are required.",
                    "context": {"requiredGranularScopes": ["crm.objects.contacts.write"]},
                }
            ],
            "links": {"scopes": "https://developers.hubspot.com/scopes"},
            "category": "MISSING_SCOPES",
        },
    )


def server_error(status: int = 500) -> FakeResponse:
    return FakeResponse(
        status,
        {
            "status": "error",
            "message": "internal error",
            "correlationId": _correlation(),
            "category": "INTERNAL_ERROR",
        },
    )


def multi_status_error(
    category: str = "VALIDATION_ERROR", message: str = "Invalid email address", name: str = "email"
) -> FakeResponse:
    """207: the request went through but the one input failed."""
    now = _now()
    return FakeResponse(
        207,
        {
            "status": "COMPLETE",
            "results": [],
            "numErrors": 1,
            "errors": [
                {
                    "status": "error",
                    "category": category,
                    "message": message,
                    "context": {"propertyName": [name]},
                    "errors": [],
                    "links": {},
                }
            ],
            "startedAt": now,
            "completedAt": now,
        },
    )


def created(contact_id: str = "901", properties: dict[str, str] | None = None) -> FakeResponse:
    """201 with one created contact (HubSpot answers 200 or 201 on success)."""
    now = _now()
    return FakeResponse(
        201,
        {
            "status": "COMPLETE",
            "results": [
                {
                    "id": contact_id,
                    "properties": properties or {},
                    "createdAt": now,
                    "updatedAt": now,
                    "archived": False,
                    "new": True,
                }
            ],
            "startedAt": now,
            "completedAt": now,
        },
    )


class FakeHubSpot:
    def __init__(
        self,
        access_token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        *,
        limit_per_10s: int | None = None,
        daily_limit: int | None = None,
    ) -> None:
        self.access_token = access_token
        self.limit_per_10s = limit_per_10s
        self.daily_limit = daily_limit
        self.daily_used = 0
        self.upsert_calls = 0
        self.rate_limited = 0  # 429s sent by the 10-second limit
        self._window: deque[float] = deque()
        self._rejects: dict[str, tuple[str, str, str]] = {}
        # What token-info reports for the access token.
        self.scopes: tuple[str, ...] = ("crm.objects.contacts.read", "crm.objects.contacts.write")
        self.requests: list[RecordedRequest] = []
        self.contacts: dict[tuple[str, str], dict[str, Any]] = {}
        self._queue: deque[FakeResponse] = deque()
        self._ids = itertools.count(101)
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        if ssl_context is not None:
            self._server.socket = ssl_context.wrap_socket(self._server.socket, server_side=True)
        scheme = "https" if ssl_context is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def reject_input(
        self,
        id_value: str,
        category: str = "VALIDATION_ERROR",
        code: str = "INVALID_EMAIL",
        name: str = "email",
    ) -> None:
        """Inputs with this id fail inside a batch; the batch's others do not."""
        with self._lock:
            self._rejects[id_value] = (category, code, name)

    def queue(self, *responses: FakeResponse) -> None:
        with self._lock:
            self._queue.extend(responses)

    def start(self) -> FakeHubSpot:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> FakeHubSpot:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- behaviour

    def _answer(self, request: RecordedRequest) -> FakeResponse:
        with self._lock:
            self.requests.append(request)
            if self._queue:
                return self._queue.popleft()
        if request.method == "POST" and request.path == TOKEN_INFO_PATH:
            return self._token_info(request.body)
        if request.method != "POST" or request.path != UPSERT_PATH:
            return FakeResponse(
                404, {"status": "error", "message": "Not found", "category": "OBJECT_NOT_FOUND"}
            )
        if self.access_token is not None and (
            request.headers.get("authorization") != f"Bearer {self.access_token}"
        ):
            return unauthorized()
        if not isinstance(request.body, dict) or not isinstance(request.body.get("inputs"), list):
            return FakeResponse(
                400,
                {
                    "status": "error",
                    "message": "Invalid input JSON",
                    "category": "VALIDATION_ERROR",
                },
            )
        limited = self._limit()
        if limited is not None:
            return limited
        answer = self._upsert(request.body["inputs"])
        answer.headers.update(self._limit_headers())
        return answer

    def _limit(self) -> FakeResponse | None:
        with self._lock:
            now = time.monotonic()
            while self._window and self._window[0] <= now - 10:
                self._window.popleft()
            if self.limit_per_10s is not None and len(self._window) >= self.limit_per_10s:
                self.rate_limited += 1
                answer = rate_limited("TEN_SECONDLY_ROLLING")
                answer.headers.update(self._limit_headers(locked=True))
                return answer
            self._window.append(now)
            self.upsert_calls += 1
            self.daily_used += 1
        return None

    def _limit_headers(self, locked: bool = False) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.limit_per_10s is not None:
            headers["X-HubSpot-RateLimit-Max"] = str(self.limit_per_10s)
            headers["X-HubSpot-RateLimit-Remaining"] = str(
                max(0, self.limit_per_10s - len(self._window))
            )
            headers["X-HubSpot-RateLimit-Interval-Milliseconds"] = "10000"
        if self.daily_limit is not None:
            headers["X-HubSpot-RateLimit-Daily"] = str(self.daily_limit)
            headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(
                max(0, self.daily_limit - self.daily_used)
            )
        return headers

    def _token_info(self, body: Any) -> FakeResponse:
        # HubSpot answers an unknown token with 400 and an error body.
        token = body.get("tokenKey") if isinstance(body, dict) else None
        if not token or (self.access_token is not None and token != self.access_token):
            return FakeResponse(
                400,
                {
                    "status": "error",
                    "message": "The access token is invalid or expired",
                    "category": "VALIDATION_ERROR",
                },
            )
        return FakeResponse(
            200,
            {"userId": 1, "hubId": HUB_ID, "appId": 7, "scopes": list(self.scopes)},
        )

    def _upsert(self, inputs: list[dict[str, Any]]) -> FakeResponse:
        now = _now()
        results = []
        errors = []
        ids = [str(item.get("id")).lower() for item in inputs]
        if len(inputs) > 100 or len(set(ids)) != len(ids):
            message = (
                "Duplicate IDs found in batch input"
                if len(inputs) <= 100
                else "Batch input limit exceeded: at most 100 inputs"
            )
            return FakeResponse(
                400,
                {
                    "status": "error",
                    "message": message,
                    "correlationId": _correlation(),
                    "category": "VALIDATION_ERROR",
                },
            )
        with self._lock:
            for item in inputs:
                reject = self._rejects.get(str(item.get("id")))
                if reject is not None:
                    category, code, name = reject
                    errors.append(
                        {
                            "status": "error",
                            "category": category,
                            "subCategory": code,
                            "message": f"Property values were not valid for {item.get('id')}",
                            "context": {"ids": [str(item.get("id"))], "propertyName": [name]},
                        }
                    )
                    continue
                key = (str(item.get("idProperty", "hs_object_id")), str(item.get("id")))
                contact = self.contacts.get(key)
                new = contact is None
                if contact is None:
                    contact = {"id": str(next(self._ids)), "createdAt": now, "properties": {}}
                    self.contacts[key] = contact
                contact["properties"].update(item.get("properties") or {})
                contact["updatedAt"] = now
                results.append(
                    {
                        "id": contact["id"],
                        "properties": dict(contact["properties"]),
                        "createdAt": contact["createdAt"],
                        "updatedAt": now,
                        "archived": False,
                        "new": new,
                    }
                )
        body: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": now,
            "completedAt": now,
        }
        if errors:
            body["numErrors"] = len(errors)
            body["errors"] = errors
            return FakeResponse(207, body)
        return FakeResponse(200, body)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                headers = {k.lower(): v for k, v in self.headers.items()}
                answer = fake._answer(RecordedRequest(self.command, self.path, headers, body))
                if answer.delay:
                    fake._released.wait(answer.delay)
                data = (
                    answer.body
                    if isinstance(answer.body, bytes)
                    else json.dumps(answer.body).encode()
                )
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json;charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return Handler
