"""The webhook endpoint: auth, body limits, then parse, validate and store
(:mod:`bridge.leads`, :meth:`Store.ingest`), answer.

The answer is 200 only after the batch is committed to the store; anything
that fails before the commit answers 503 so the provider retries. Invalid
batch elements are quarantined one by one and the valid ones accepted.

Back-pressure: the bodies handed to the store and not yet committed are
bounded in bytes (``storage.max_inflight_bytes``); beyond the bound a request
is answered 503 with ``Retry-After`` at once, so a stalled store (a locked
database, a slow disk) holds a bounded amount of memory, not every request
the provider sends meanwhile.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from bridge.errors import StoreError
from bridge.leads import BodyResult, body_result, parse_body, quarantined_body
from bridge.logs import access, event
from bridge.metrics import Metrics
from bridge.store.base import Store

log = logging.getLogger("lead_bridge.intake")

LOGGED_IDS = 20
# Seconds a provider is asked to wait after a 503.
RETRY_AFTER = b"5"
DEFAULT_MAX_INFLIGHT_BYTES = 32 << 20


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


_PLAIN_JSON = frozenset({"application/json", "application/json; charset=utf-8"})


def media_type_problem(content_type: str | None) -> str | None:
    """Why a ``Content-Type`` is refused, or None: JSON media types only.

    ``application/json`` or any ``application/*+json``, parameters allowed, a
    ``charset`` only if it is UTF-8; a missing header is taken as JSON (the
    body decides). Messages never quote the header.
    """
    if content_type is None or content_type in _PLAIN_JSON:
        return None  # what nearly every provider sends: no parsing on the hot path
    if not content_type.strip():
        return None
    media, _, parameters = content_type.partition(";")
    media = media.strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        return "send the leads as JSON with Content-Type: application/json"
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        charset = value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
            return "the body must be UTF-8 encoded JSON (charset=utf-8)"
    return None


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


def _ids(ids: Sequence[str]) -> str:
    shown = list(ids[:LOGGED_IDS])
    if len(ids) > LOGGED_IDS:
        shown.append(f"+{len(ids) - LOGGED_IDS}")
    return ",".join(shown)


@runtime_checkable
class BodyStore(Protocol):
    """A store backend that takes webhook bodies raw and parses them itself,
    with :func:`bridge.leads.parse_body` and the same result (the SQLite
    backend does it in its writer process, off the event loop). Not part of
    the :class:`Store` interface: intake uses it where a backend has it."""

    async def ingest_body(
        self, body: bytes, destinations: Sequence[str], now: float
    ) -> BodyResult: ...


BodyIngester = Callable[[bytes, Sequence[str], float], Awaitable[BodyResult]]


def body_ingester(store: Store) -> BodyIngester:
    """How intake stores a body in ``store``: raw where the backend parses
    bodies itself (:class:`BodyStore`), else parsed here and stored as leads.

    A refused body is quarantined whole; an empty array stores nothing.
    """
    if isinstance(store, BodyStore):
        return store.ingest_body

    async def parse_and_ingest(body: bytes, destinations: Sequence[str], now: float) -> BodyResult:
        batch = parse_body(body)
        if batch.problem is not None:
            await store.ingest([], [], [quarantined_body(body, batch.problem)], now)
            return body_result(batch, None)
        if not batch.received:
            return body_result(batch, None)
        stored = await store.ingest(batch.leads, destinations, batch.rejected, now)
        return body_result(batch, stored)

    return parse_and_ingest


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
        max_inflight_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES,
        path: str = "/lead/webhook",
        access_log: bool = True,
        clock: Any = time.time,
    ) -> None:
        self.path = path.rstrip("/")
        # False: no line for accepted requests (refusals and failures are still logged).
        self.access_log = access_log
        self.store = store
        self.ingest_body = body_ingester(store)
        self.metrics = metrics
        self.destinations = list(destinations)
        self.header_secrets = [s.encode() for s in header_secrets]
        self.path_secrets = [s.encode() for s in path_secrets]
        self.max_body_bytes = max_body_bytes
        self.max_inflight_bytes = max_inflight_bytes
        self.inflight_bytes = 0  # bodies given to the store, not yet answered by it
        self.clock = clock
        # Called after a commit that created deliveries: wakes the in-process
        # engine (claims now, not at its next poll).
        self.on_commit: Callable[[], None] | None = None

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
        authorization = content_length = content_type = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-length":
                content_length = value.decode("latin-1")
            elif name == b"content-type" and content_type is None:
                content_type = value.decode("latin-1")
        limit = self.max_body_bytes

        async def read() -> bytes:
            if declared_too_large(content_length, limit):
                raise BodyTooLarge
            return await read_asgi_body(receive, limit)

        try:
            status, answer = await self.process(
                segment, authorization, read, content_type=content_type
            )
        except ClientGone:
            return
        await _answer(send, status, answer)

    async def process(
        self,
        segment: str | None,
        authorization: str | None,
        read: Callable[[], Awaitable[bytes]],
        *,
        content_type: str | None = None,
    ) -> Answer:
        started = time.perf_counter()
        if not self._path_ok(segment):
            self.metrics.request("not_found")
            return _error(404, "not_found", "no such endpoint")
        if not self._header_ok(authorization):
            self.metrics.request("unauthorized")
            event(log, "webhook", logging.WARNING, outcome="unauthorized", status=401)
            return _error(401, "unauthorized", "missing or invalid Authorization header")
        media_problem = media_type_problem(content_type)
        if media_problem is not None:
            # Refused before the body is read; nothing is stored, the provider retries.
            self.metrics.request("unsupported_media_type")
            event(log, "webhook", logging.WARNING, outcome="unsupported_media_type", status=415)
            return _error(415, "unsupported_media_type", media_problem)
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
        size = len(body)
        if self.inflight_bytes and self.inflight_bytes + size > self.max_inflight_bytes:
            # (A body alone is always taken, however large: max_body_bytes bounds it.)
            self.metrics.request("overloaded")
            event(log, "webhook", logging.WARNING, outcome="overloaded", status=503, bytes=size)
            return _error(503, "overloaded", "too many leads are waiting to be stored; retry later")
        self.inflight_bytes += size
        try:
            result = await self.ingest_body(body, self.destinations, self.clock())
        except StoreError as exc:
            # Nothing was acknowledged, so nothing is lost: the provider sends it again.
            self.metrics.request("unavailable")
            event(
                log,
                "webhook",
                logging.ERROR,
                outcome="unavailable",
                status=503,
                bytes=len(body),
                error=type(exc).__name__,
            )
            return _error(503, "unavailable", "the leads could not be stored; retry later")
        finally:
            self.inflight_bytes -= size
        if result.problem is not None:  # refused whole; the raw body is quarantined
            code, message = result.problem
            self.metrics.request("bad_request")
            event(log, "webhook", logging.WARNING, outcome=code, status=400, bytes=len(body))
            return _error(400, code, message)
        if not result.received:
            self.metrics.probe()
            self.metrics.request("probe")
            if self.access_log:
                access(log, "webhook", outcome="probe", leads=0, status=200)
            return 200, {"accepted": 0, "duplicates": 0, "rejected": 0}
        if result.accepted and self.destinations and self.on_commit is not None:
            self.on_commit()
        accepted, duplicates, rejected = (
            len(result.accepted),
            len(result.duplicates),
            result.rejected,
        )
        self.metrics.request("accepted")
        self.metrics.leads(
            received=result.received, accepted=accepted, duplicates=duplicates, rejected=rejected
        )
        if self.access_log:
            access(
                log,
                "webhook",
                outcome="accepted",
                status=200,
                leads=result.received,
                accepted=accepted,
                duplicates=duplicates,
                rejected=rejected,
                lead_ids=_ids(result.lead_ids),
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
        return 200, {"accepted": accepted, "duplicates": duplicates, "rejected": rejected}


async def _answer(send: Send, status: int, answer: dict[str, Any], *, allow: bool = False) -> None:
    body = orjson.dumps(answer)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if allow:
        headers.append((b"allow", b"POST"))
    elif status == 503:
        headers.append((b"retry-after", RETRY_AFTER))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
