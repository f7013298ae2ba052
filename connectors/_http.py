"""The HTTP seam shared by the Slack and webhook connectors.

Two clients, chosen by how hot the path is (measured on one core, POSTs of one
lead to a local sink, see bench/README.md):

* webhook: a raw ``aiohttp.ClientSession`` (:func:`make_session`), ~0.1 ms of
  CPU per request (~9,000 req/s). The webhook destination must drain backlogs at
  thousands of leads a second, and the engine, the store and the log line need
  most of the CPU budget per delivery.
* Slack (rate-limited to about one message a second anyway): an
  ``httpx.AsyncClient`` (:func:`make_client`) over the ``httpx_aiohttp``
  transport, ~0.37 ms per request (~2,650 req/s); httpx's default transport
  costs ~1.2 ms (~750 req/s). Its tests inject ``httpx.MockTransport`` or use
  ``respx.mock(using="httpx")``.

:func:`classify_transport_error` is the one place that turns httpx/aiohttp
exceptions into :mod:`bridge.errors`; :func:`classify_status` reads statuses.
"""

from __future__ import annotations

import asyncio

import aiohttp
import httpx

from bridge import USER_AGENT
from bridge.errors import (
    DeliveryError,
    PermanentError,
    RetryableError,
    error_for_status,
    parse_retry_after,
)


def make_client(
    *,
    timeout: float,
    max_connections: int,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """A client that never follows redirects (a 3xx is an answer, not a hop)."""
    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    if transport is None:
        from httpx_aiohttp import AiohttpTransport

        transport = AiohttpTransport(limits=limits)
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
    )


def make_session(*, timeout: float, max_connections: int) -> aiohttp.ClientSession:
    """An aiohttp session for one destination; call from the event loop that uses it.

    The connection limit is at least the destination's concurrency (the engine
    bounds requests in flight), so requests never queue for a connection.
    Cookies are not kept: a receiver's Set-Cookie must not follow other leads.
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max_connections, limit_per_host=max_connections),
        timeout=aiohttp.ClientTimeout(total=timeout),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=True,
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
    # httpx_aiohttp re-raises aiohttp errors as httpx ones, but maps every
    # connection error to ConnectTimeout: the original is the better witness.
    if isinstance(exc, httpx.HTTPError) and isinstance(exc.__cause__, aiohttp.ClientError):
        exc = exc.__cause__
    detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
    if isinstance(exc, httpx.TimeoutException | asyncio.TimeoutError):
        return RetryableError(f"{what} request timed out ({detail})")
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL | aiohttp.InvalidURL):
        return PermanentError(f"{what} URL cannot be requested ({detail})")
    if isinstance(exc, httpx.TransportError | aiohttp.ClientError | OSError):
        return RetryableError(f"{what} connection failed ({detail})")
    if isinstance(exc, httpx.HTTPError):
        return RetryableError(f"{what} request failed ({detail})")
    raise TypeError(f"not a transport error: {type(exc).__name__}") from exc


TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    httpx.HTTPError,
    aiohttp.ClientError,
    asyncio.TimeoutError,
    OSError,
)


def status_error(response: httpx.Response, message: str) -> DeliveryError | None:
    """:func:`bridge.errors.error_for_status` with the response's ``Retry-After``."""
    return classify_status(response.status_code, message, response.headers.get("retry-after"))


def short_body(response: httpx.Response, limit: int = 200) -> str:
    """The start of an error body, for the stored error message.

    Remote error bodies describe the failure ("invalid_payload"); they do not echo
    our payload for the APIs we talk to, and we cut them short regardless.
    """
    text = response.text.strip().replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."
