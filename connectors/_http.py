"""The HTTP seam of every connector: one transport, one address guard, one
classification of failures.

Connectors speak httpx: an ``httpx.AsyncClient`` from :func:`make_client`
(Slack, the Salesforce token, the HubSpot check, alerts, custom connectors).
The one exception is the webhook's hot path (one POST per lead, thousands a
second): it calls :meth:`Transport.exchange`, the same transport without httpx's
request and response models, which cost ~15% of the worker's CPU per delivery
(bench/README.md, "HTTP seam"). Both raise httpx's exceptions.

:class:`Transport` is the one transport: httpx requests over one aiohttp
session per destination, whose TCP connector
(:func:`connectors._aiohttp.connector`, imported with the first session) is the
address guard. httpx's own transport costs several times the CPU per request
(bench/README.md). Tests inject ``httpx.MockTransport`` or a resolver.

:func:`classify_transport_error` is the one place that turns transport
exceptions into :mod:`bridge.errors`; :func:`classify_status` reads statuses.

Outbound address guard (SSRF): every request connects through
:func:`connectors._aiohttp.connector`, whose resolver refuses a host when any of its addresses is not globally
routable (:mod:`connectors._addresses`) and whose socket factory checks the
address of every socket it opens, IP literals included. The addresses checked
are the ones connected to: nothing resolves the name a second time, so a DNS
answer that changes after the check (rebinding) cannot reach an internal
address. ``allow_private: true`` on a destination turns the guard off.
Redirects are never followed. The blocking SDKs' urllib3 pools get the same
check in :mod:`connectors._urllib3`.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import TYPE_CHECKING

import httpx
import yarl

from bridge import USER_AGENT
from bridge.errors import (
    DeliveryError,
    PermanentError,
    RetryableError,
    error_for_status,
    parse_retry_after,
)
from connectors import _addresses
from connectors._addresses import AddressRefused

if TYPE_CHECKING:  # aiohttp is imported with the first session (connectors._aiohttp)
    import aiohttp
    from aiohttp.abc import AbstractResolver
    from multidict import CIMultiDictProxy


def address_refused(exc: BaseException) -> AddressRefused | None:
    """The guard's refusal behind a library's wrapping exceptions, if any.

    urllib3 and requests wrap it (NewConnectionError, MaxRetryError.reason,
    ConnectionError), aiohttp keeps it as ``os_error``.
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, AddressRefused):
            return current
        for name in ("os_error", "reason"):
            inner = getattr(current, name, None)
            if isinstance(inner, BaseException):
                todo.append(inner)
        todo.extend([current.__cause__, current.__context__])
        todo.extend(a for a in current.args if isinstance(a, BaseException))
    return None


@functools.cache
def default_ssl_context() -> ssl.SSLContext:
    """The CA bundle httpx would use (certifi), built once per process on first use:
    loading it is not on the start-up path."""
    return httpx.create_ssl_context()


_EXTENSIONS = {"http_version": b"HTTP/1.1"}  # read-only, shared by every response
RawHeaders = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class Answer:
    """The whole answer of :meth:`Transport.exchange`."""

    status: int
    headers: Mapping[str, str]  # case-insensitive
    content: bytes


class Transport(httpx.AsyncBaseTransport):
    """httpx requests over one aiohttp session with the guarded connector.

    The session is opened on the first request (on the event loop that uses
    it). Every response is read in full before it is returned; cookies are
    never kept (a receiver's Set-Cookie must not follow other leads), and
    redirects are never followed. ``timeout`` bounds each :meth:`exchange`; a
    client's requests carry their own httpx timeouts. The connection limit is at least the destination's concurrency (the
    engine bounds requests in flight), so requests never queue for a connection.
    """

    def __init__(
        self,
        *,
        timeout: float,
        max_connections: int,
        allow_private: bool = False,
        resolver: AbstractResolver | None = None,
        allowed: Callable[[_addresses.IPAddress], bool] = _addresses.is_global,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._timeout_seconds = timeout
        self._timeout: aiohttp.ClientTimeout | None = None  # with the session
        self._max_connections = max_connections
        self._allow_private = allow_private
        self._resolver = resolver
        self._allowed = allowed
        self._ssl_context = ssl_context
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}
        # The last URL requested and its parsed form (a destination has one URL).
        self._last_url: object = None
        self._last_target = yarl.URL()

    def _open(self) -> aiohttp.ClientSession:
        from connectors import _aiohttp

        self._aiohttp = _aiohttp
        self._session = _aiohttp.open_session(
            timeout=self._timeout_seconds,
            max_connections=self._max_connections,
            allow_private=self._allow_private,
            resolver=self._resolver,
            allowed=self._allowed,
            ssl_context=self._ssl_context or default_ssl_context(),
        )
        self._timeout = self._session.timeout
        return self._session

    def _client_timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout | None:
        given = request.extensions.get("timeout")
        if not given:
            return None
        key = (given.get("connect"), given.get("read"), given.get("pool"))
        found = self._timeouts.get(key)
        if found is None:
            found = self._timeouts[key] = self._aiohttp.client_timeout(*key)
        return found

    def _target(self, url: object) -> yarl.URL:
        # A destination requests one URL: its parsed form is kept, recognised by identity.
        if url is not self._last_url:
            self._last_url, self._last_target = url, yarl.URL(str(url), encoded=True)
        return self._last_target

    async def _send(
        self,
        method: str,
        url: object,
        body: bytes,
        headers: Mapping[str, str] | list[tuple[str, str]],
        timeout: aiohttp.ClientTimeout | None,
        request: httpx.Request | None = None,
    ) -> tuple[int, CIMultiDictProxy[str], RawHeaders, bytes]:
        session = self._session or self._open()
        try:
            async with session.request(
                method,
                self._target(url),
                data=body or None,
                headers=headers,
                allow_redirects=False,
                timeout=timeout or self._timeout,
            ) as answer:
                content = await answer.read()
                return answer.status, answer.headers, answer.raw_headers, content
        except BaseException as exc:
            mapped = next((to for kind, to in self._aiohttp.ERRORS if isinstance(exc, kind)), None)
            if mapped is None:
                raise
            raise mapped(f"{type(exc).__name__}: {exc}".rstrip(": "), request=request) from exc

    async def exchange(
        self, method: str, url: str, body: bytes, headers: Mapping[str, str]
    ) -> Answer:
        """One request, its whole answer: the lean path of the webhook connector.

        Same session, guard, timeout and errors (httpx's) as
        :meth:`handle_async_request`, without building httpx's request and
        response models, which cost more CPU than the exchange itself at a few
        thousand deliveries a second (bench/README.md, "HTTP seam").
        """
        status, answer_headers, _, content = await self._send(method, url, body, headers, None)
        return Answer(status, answer_headers, content)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._session is None:
            self._open()
        stream = request.stream
        # A ready body (content=) is taken as is; a streamed one is read.
        body = (
            b"".join(stream) if isinstance(stream, httpx.SyncByteStream) else await request.aread()
        )
        status, _, raw, content = await self._send(
            request.method,
            request.url,
            body,
            # Names keep the case they were given (latin-1 is how httpx stores them).
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw],
            self._client_timeout(request),
            request,
        )
        response = httpx.Response(
            status,
            headers=raw,
            stream=httpx.ByteStream(content),
            request=request,
            # No reason_phrase: httpx then gives the standard one, never the receiver's
            # own (which may echo what it was sent).
            extensions=_EXTENSIONS,
        )
        # aiohttp has already read and decoded the body: httpx must not run it
        # through its content decoders a second time (a gzip answer would be
        # decoded twice), so aread() returns it as is.
        response._content = content
        return response

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def make_client(
    *,
    timeout: float,
    max_connections: int,
    allow_private: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
    resolver: AbstractResolver | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> httpx.AsyncClient:
    """A client that never follows redirects (a 3xx is an answer, not a hop).

    Tests inject ``transport``; otherwise requests go through :class:`Transport`.
    """
    if transport is None:
        transport = Transport(
            timeout=timeout,
            max_connections=max_connections,
            allow_private=allow_private,
            resolver=resolver,
            ssl_context=ssl_context,
        )
    return httpx.AsyncClient(
        transport=transport,
        # No cookies kept: a receiver's Set-Cookie must not follow other requests.
        cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
    )


def classify_status(status: int, message: str, retry_after: str | None) -> DeliveryError | None:
    """:func:`bridge.errors.error_for_status` with a raw ``Retry-After`` header value."""
    return error_for_status(status, message, retry_after=parse_retry_after(retry_after))


def classify_transport_error(exc: BaseException, what: str) -> DeliveryError:
    """Map an exception raised while sending a request to the project's error tree.

    ``what`` names the destination kind for the message (``"Slack"``, ``"webhook"``).
    Messages hold the exception type and text, never the request body.
    """
    refused = address_refused(exc)
    if refused is not None:
        return PermanentError(f"{what} {refused}")
    detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
    if isinstance(exc, httpx.TimeoutException | asyncio.TimeoutError):
        return RetryableError(f"{what} request timed out ({detail})")
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return PermanentError(f"{what} URL cannot be requested ({detail})")
    if isinstance(exc, httpx.TransportError | OSError):
        return RetryableError(f"{what} connection failed ({detail})")
    if isinstance(exc, httpx.HTTPError):
        return RetryableError(f"{what} request failed ({detail})")
    raise TypeError(f"not a transport error: {type(exc).__name__}") from exc


# What a request through this module may raise besides a classified answer.
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (httpx.HTTPError, httpx.InvalidURL, OSError)


def status_error(response: httpx.Response, message: str) -> DeliveryError | None:
    """:func:`bridge.errors.error_for_status` with the response's ``Retry-After``."""
    return classify_status(response.status_code, message, response.headers.get("retry-after"))


def reason(status: int) -> str:
    """The standard reason phrase of a status, for error messages.

    Never the receiver's own phrase or body: a receiver may echo the lead back.
    """
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
