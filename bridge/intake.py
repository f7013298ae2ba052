"""The webhook endpoint: auth, body limits, parse, validate, store, answer.

The answer is 200 only after the batch is committed to the store; anything
that fails before the commit answers 503 so the provider retries. Invalid
batch elements are quarantined one by one and the valid ones accepted.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from bridge.errors import StoreError
from bridge.logs import access, event
from bridge.metrics import Metrics
from bridge.store.base import LeadIn, QuarantineIn, Store

log = logging.getLogger("lead_bridge.intake")

MAX_DEPTH = 32
MAX_ID_LENGTH = 255
LOGGED_IDS = 20


def json_response(status: int, body: dict[str, Any]) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")).encode(),
        status_code=status,
        media_type="application/json",
    )


def error(status: int, code: str, message: str) -> Response:
    return json_response(status, {"error": code, "message": message})


Answer = tuple[int, dict[str, Any]]


def _error(status: int, code: str, message: str) -> Answer:
    return status, {"error": code, "message": message}


class BodyTooLarge(Exception):
    pass


def declared_too_large(content_length: str | None, limit: int) -> bool:
    if content_length is None:
        return False
    try:
        return int(content_length) > limit
    except ValueError:
        return False


class ClientGone(Exception):
    pass


async def read_asgi_body(receive: Receive, limit: int) -> bytes:
    """The ASGI version of :func:`read_body` for the fast path."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def too_deep(node: Any, limit: int) -> bool:
    """True when containers nest deeper than ``limit`` (the top level counts as 1)."""
    stack: list[tuple[Any, int]] = [(node, 1)]
    while stack:
        current, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(current, dict):
            stack.extend((v, depth + 1) for v in current.values() if isinstance(v, dict | list))
        elif isinstance(current, list):
            stack.extend((v, depth + 1) for v in current if isinstance(v, dict | list))
    return False


def element_problem(element: Any) -> str | None:
    if not isinstance(element, dict):
        return f"expected an object, got {_json_type(element)}"
    lead_id = element.get("id")
    if not isinstance(lead_id, str) or not lead_id.strip():
        if "id" not in element:
            return "missing 'id'"
        return f"'id' must be a non-empty string, got {_json_type(lead_id)}"
    if len(lead_id) > MAX_ID_LENGTH:
        return f"'id' is longer than {MAX_ID_LENGTH} characters"
    if not lead_id.isprintable():
        # Ids end up in URLs, log lines and database keys (PostgreSQL text refuses NUL).
        return "'id' contains control or invalid characters"
    if "data" in element and not isinstance(element["data"], dict):
        return f"'data' must be an object, got {_json_type(element['data'])}"
    return None


# 19 digits in a row: perhaps an integer beyond 64 bits, which orjson would turn
# into a float (losing digits) where the standard library keeps it exact. Found
# by mapping digits to "0" and everything else to " " (10x faster than a regex).
_DIGITS_ONLY = bytes(48 if 48 <= i <= 57 else 32 for i in range(256))
_LONG_NUMBER = b"0" * 19


def _loads(body: bytes) -> tuple[Any, bool]:
    """orjson where it can (several times faster), the standard library otherwise.

    orjson refuses a little that the standard library accepts (NaN, Infinity,
    lone surrogate escapes, numbers out of a double's range): those bodies, and
    invalid ones, are parsed again by the standard library, which either
    accepts them or gives the error message the provider sees. Bodies with very
    long digit runs go to the standard library directly (see _LONG_NUMBER).
    Returns the value and whether orjson parsed it (then orjson can also write
    it back exactly; see split_batch).
    """
    if _LONG_NUMBER not in body.translate(_DIGITS_ONLY):
        try:
            return orjson.loads(body), True
        except orjson.JSONDecodeError:
            pass
    return json.loads(body), False


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _dump_stdlib(value: Any) -> str:
    """For values only the standard library parsed: it writes NaN and Infinity
    back as they came (orjson would write null) and integers of any size."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate: escape to ASCII so it can be stored
        return json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    return text


def _dump(value: Any) -> str:
    try:
        # orjson is ~10x faster; it refuses what it cannot represent exactly
        # (integers beyond 64 bits, lone surrogates such as "\ud800"), and then the
        # standard library takes over, escaping to ASCII so that any string can be
        # stored (a lone surrogate cannot be encoded as UTF-8).
        return orjson.dumps(value).decode()
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


@dataclass
class Batch:
    leads: list[LeadIn]
    rejected: list[QuarantineIn]


def split_batch(elements: list[Any], dump: Callable[[Any], str] = _dump) -> Batch:
    leads: list[LeadIn] = []
    rejected: list[QuarantineIn] = []
    for index, element in enumerate(elements):
        problem = element_problem(element)
        if problem is not None:
            lead_id = element.get("id") if isinstance(element, dict) else None
            rejected.append(
                QuarantineIn(
                    reason=f"element {index}: {problem}",
                    raw=dump(element),
                    lead_id=_column(lead_id),
                    item_index=index,
                )
            )
            continue
        created = element.get("created")
        url = element.get("url")
        leads.append(
            LeadIn(
                id=element["id"],
                payload=dump(element),
                created=_column(created),
                url=_column(url),
            )
        )
    return Batch(leads, rejected)


def _column(value: Any) -> str | None:
    # Indexed copies of `created`, `url` and quarantined ids; the payload keeps the
    # original anyway. Only text any database can store: no NUL, valid UTF-8.
    if not isinstance(value, str) or "\x00" in value or len(value) > 2048:
        return None
    if value.isascii():
        return value
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate from a "\ud800" escape
        return None
    return value


def _ids(ids: Sequence[str]) -> str:
    shown = list(ids[:LOGGED_IDS])
    if len(ids) > LOGGED_IDS:
        shown.append(f"+{len(ids) - LOGGED_IDS}")
    return ",".join(shown)


class Intake:
    """The endpoint. One instance per app; ``handle`` is the Starlette endpoint."""

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        *,
        destinations: Sequence[str],
        header_secrets: Sequence[str],
        path_secrets: Sequence[str],
        max_body_bytes: int,
        path: str = "/lead/webhook",
        access_log: bool = True,
        clock: Any = time.time,
    ) -> None:
        self.path = path.rstrip("/")
        # False: no line for accepted requests (refusals and failures are still logged).
        self.access_log = access_log
        self.store = store
        self.metrics = metrics
        self.destinations = list(destinations)
        self.header_secrets = [s.encode() for s in header_secrets]
        self.path_secrets = [s.encode() for s in path_secrets]
        self.max_body_bytes = max_body_bytes
        self.clock = clock
        # Called with the commit's wait after a commit that created deliveries
        # (wakes and paces the in-process engine).
        self.on_commit: Callable[[float], None] | None = None

    # ------------------------------------------------------------------ auth

    @staticmethod
    def _matches(candidate: bytes, secrets: Sequence[bytes]) -> bool:
        # Compare against every secret so timing does not reveal which one matched.
        found = False
        for secret in secrets:
            found |= hmac.compare_digest(candidate, secret)
        return found

    def match(self, path: str) -> tuple[bool, str | None]:
        """Is this the webhook path, and which path-secret segment does it carry?
        Trailing slashes are optional."""
        base = self.path
        if path == base or path == base + "/":
            return True, None
        if not path.startswith(base + "/"):
            return False, None
        segment = path[len(base) + 1 :].removesuffix("/")
        if not segment or "/" in segment:
            return False, None
        return True, segment

    def _path_ok(self, segment: str | None) -> bool:
        if not self.path_secrets:
            return segment is None
        if segment is None:
            return False
        return self._matches(segment.encode(), self.path_secrets)

    def _header_ok(self, value: str | None) -> bool:
        if not self.header_secrets:
            return True
        if value is None:
            return False
        value = value.strip()
        if value[:7].lower() == "bearer ":
            value = value[7:].strip()
        return self._matches(value.encode(), self.header_secrets)

    # ------------------------------------------------------------------ endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A raw ASGI endpoint for ``{server.path}[/{secret}]``, any method.

        Webhook requests are the hot path, so they skip the framework's routing
        and request objects; everything else goes through Starlette.
        """
        _, segment = self.match(scope["path"])
        if scope["method"] != "POST":
            # With path secrets nothing may reveal that the route exists.
            if self.path_secrets or segment is not None:
                await _answer(send, *_error(404, "not_found", "no such endpoint"))
            else:
                await _answer(send, *_error(405, "method_not_allowed", "use POST"), allow=True)
            return
        authorization = content_length = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-length":
                content_length = value.decode("latin-1")
        limit = self.max_body_bytes

        async def read() -> bytes:
            if declared_too_large(content_length, limit):
                raise BodyTooLarge
            return await read_asgi_body(receive, limit)

        try:
            status, answer = await self.process(segment, authorization, read)
        except ClientGone:
            return
        await _answer(send, status, answer)

    async def process(
        self,
        segment: str | None,
        authorization: str | None,
        read: Callable[[], Awaitable[bytes]],
    ) -> Answer:
        started = time.perf_counter()
        if not self._path_ok(segment):
            self.metrics.request("not_found")
            return _error(404, "not_found", "no such endpoint")
        if not self._header_ok(authorization):
            self.metrics.request("unauthorized")
            event(log, "webhook", logging.WARNING, outcome="unauthorized", status=401)
            return _error(401, "unauthorized", "missing or invalid Authorization header")
        try:
            body = await read()
        except BodyTooLarge:
            self.metrics.request("too_large")
            event(log, "webhook", logging.WARNING, outcome="too_large", status=413)
            return _error(
                413,
                "payload_too_large",
                f"the body exceeds the limit of {self.max_body_bytes} bytes",
            )
        problem = None
        try:
            parsed, fast = _loads(body)
        except RecursionError:
            problem = ("too_deep", f"the JSON nests deeper than {MAX_DEPTH} levels")
        except (ValueError, UnicodeDecodeError) as exc:
            problem = ("invalid_json", f"the body is not valid JSON: {_json_error(exc)}")
        else:
            if not isinstance(parsed, list):
                problem = (
                    "not_an_array",
                    f"the body must be a JSON array of lead objects, got {_json_type(parsed)}",
                )
            # Fewer brackets than the limit cannot nest deeper than it: skip the walk.
            elif body.count(b"[") + body.count(b"{") > MAX_DEPTH and too_deep(parsed, MAX_DEPTH):
                problem = ("too_deep", f"the JSON nests deeper than {MAX_DEPTH} levels")
        if problem is not None:
            return await self._quarantine_body(body, *problem)
        assert isinstance(parsed, list)
        if not parsed:
            self.metrics.probe()
            self.metrics.request("probe")
            if self.access_log:
                access(log, "webhook", outcome="probe", leads=0, status=200)
            return 200, {"accepted": 0, "duplicates": 0, "rejected": 0}

        batch = split_batch(parsed, _dump if fast else _dump_stdlib)
        committing = time.perf_counter()
        try:
            result = await self.store.ingest(
                batch.leads, self.destinations, batch.rejected, self.clock()
            )
        except StoreError as exc:
            self.metrics.request("unavailable")
            event(
                log,
                "webhook",
                logging.ERROR,
                outcome="unavailable",
                status=503,
                leads=len(parsed),
                error=type(exc).__name__,
            )
            return _error(503, "unavailable", "the leads could not be stored; retry later")
        if result.accepted and self.destinations and self.on_commit is not None:
            self.on_commit(time.perf_counter() - committing)
        accepted, duplicates, rejected = (
            len(result.accepted),
            len(result.duplicates),
            len(batch.rejected),
        )
        self.metrics.request("accepted")
        self.metrics.leads(
            received=len(parsed), accepted=accepted, duplicates=duplicates, rejected=rejected
        )
        if self.access_log:
            access(
                log,
                "webhook",
                outcome="accepted",
                status=200,
                leads=len(parsed),
                accepted=accepted,
                duplicates=duplicates,
                rejected=rejected,
                lead_ids=_ids([lead.id for lead in batch.leads]),
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
        return 200, {"accepted": accepted, "duplicates": duplicates, "rejected": rejected}

    async def _quarantine_body(self, body: bytes, code: str, message: str) -> Answer:
        raw = body.decode("utf-8", "backslashreplace")
        try:
            await self.store.ingest(
                [], [], [QuarantineIn(reason=f"{code}: {message}", raw=raw)], self.clock()
            )
        except StoreError:
            # Nothing was accepted, so nothing is lost: the provider will retry.
            self.metrics.request("unavailable")
            return _error(503, "unavailable", "the request could not be stored; retry later")
        self.metrics.request("bad_request")
        event(log, "webhook", logging.WARNING, outcome=code, status=400, bytes=len(body))
        return _error(400, code, message)


async def _answer(send: Send, status: int, answer: dict[str, Any], *, allow: bool = False) -> None:
    body = orjson.dumps(answer)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if allow:
        headers.append((b"allow", b"POST"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _json_error(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
    if isinstance(exc, UnicodeDecodeError):
        return "the body is not UTF-8"
    return str(exc)
