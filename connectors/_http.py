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

Outbound address guard (SSRF): both clients connect through :func:`connector`,
whose resolver refuses a host when any of its addresses is not globally
routable (:mod:`connectors._addresses`) and whose socket factory checks the
address of every socket it opens, IP literals included. The addresses checked
are the ones connected to: nothing resolves the name a second time, so a DNS
answer that changes after the check (rebinding) cannot reach an internal
address. ``allow_private: true`` on a destination turns the guard off.
Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import aiohttp
import httpx
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult

from bridge import USER_AGENT
from bridge.errors import (
    DeliveryError,
    PermanentError,
    RetryableError,
    error_for_status,
    parse_retry_after,
)
from connectors import _addresses

ALLOW_HINT = "set allow_private: true on the destination to allow it"


class AddressRefused(OSError):
    """A connection to an address the guard does not allow; never retried."""


class GuardedResolver(AbstractResolver):
    """Resolve with ``inner`` and refuse the host if any answer is not allowed.

    One non-public answer refuses the whole name: a name mixing public and
    internal addresses is a rebinding attempt or a misconfiguration.
    """

    def __init__(
        self,
        inner: AbstractResolver | None = None,
        allowed: Callable[[_addresses.IPAddress], bool] = _addresses.is_global,
    ) -> None:
        self._inner = inner
        self._allowed = allowed

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if self._inner is None:
            # getaddrinfo in a thread; unlike aiodns it holds nothing to close.
            self._inner = aiohttp.ThreadedResolver()
        results = await self._inner.resolve(host, port, family)
        for result in results:
            if not self._allowed(_addresses.parse(result["host"])):
                raise AddressRefused(
                    f"host {host!r} resolves to the non-public address {result['host']}; "
                    + ALLOW_HINT
                )
        return results

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


def guarded_socket_factory(
    allowed: Callable[[_addresses.IPAddress], bool] = _addresses.is_global,
) -> Callable[[AddrInfoType], socket.socket]:
    """Opens the socket for one connect attempt, after checking its address.

    The last check before ``connect()``: it sees IP literals, which skip the
    resolver, and whatever any resolver produced.
    """

    def factory(addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, address = addr_info
        if not allowed(_addresses.parse(str(address[0]))):
            raise AddressRefused(
                f"connection to the non-public address {address[0]} refused; " + ALLOW_HINT
            )
        return socket.socket(family=family, type=type_, proto=proto)

    return factory


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


def guarded_create_connection(
    address: tuple[str, int],
    timeout: float | None,
    source_address: tuple[str, int] | None = None,
    socket_options: Any = None,
    allowed: Callable[[_addresses.IPAddress], bool] = _addresses.is_global,
) -> socket.socket:
    """``urllib3.util.connection.create_connection`` with the guard: one lookup,
    every answer checked, then a connection to a checked address."""
    host, port = address
    infos = socket.getaddrinfo(host.strip("[]"), port, 0, socket.SOCK_STREAM)
    for info in infos:
        if not allowed(_addresses.parse(str(info[4][0]))):
            raise AddressRefused(
                f"host {host!r} resolves to the non-public address {info[4][0]}; " + ALLOW_HINT
            )
    error: OSError | None = None
    for family, type_, proto, _, sockaddr in infos:
        sock = socket.socket(family, type_, proto)
        try:
            for option in socket_options or ():
                sock.setsockopt(*option)
            if timeout is not None:
                sock.settimeout(timeout)
            if source_address is not None:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            error = exc
            sock.close()
    raise error or OSError(f"no address found for {host!r}")


@functools.cache
def guarded_pool_classes() -> dict[str, type]:
    """urllib3 connection pools whose connections go through the guard, for
    ``PoolManager.pool_classes_by_scheme`` (requests' adapters, the HubSpot SDK)."""
    import urllib3.connection
    import urllib3.connectionpool
    from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

    def new_conn(self: Any) -> socket.socket:
        # urllib3's own _new_conn, with the guarded create_connection.
        try:
            sock = guarded_create_connection(
                (self._dns_host, self.port),
                self.timeout,
                source_address=self.source_address,
                socket_options=self.socket_options,
            )
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        except TimeoutError as exc:
            raise ConnectTimeoutError(self, f"Connection to {self.host} timed out.") from exc
        except OSError as exc:
            raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc
        return sock

    class GuardedHTTPConnection(urllib3.connection.HTTPConnection):
        _new_conn = new_conn

    class GuardedHTTPSConnection(urllib3.connection.HTTPSConnection):
        _new_conn = new_conn

    class GuardedHTTPConnectionPool(urllib3.connectionpool.HTTPConnectionPool):
        ConnectionCls = GuardedHTTPConnection

    class GuardedHTTPSConnectionPool(urllib3.connectionpool.HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

    return {"http": GuardedHTTPConnectionPool, "https": GuardedHTTPSConnectionPool}


def guard_pool_manager(pool_manager: Any, *, allow_private: bool) -> None:
    """Route a urllib3 ``PoolManager``'s new connections through the guard.

    Call before its first request. A proxy manager is left alone: the proxy,
    set by the operator, is the only address it connects to.
    """
    from urllib3 import ProxyManager

    if not allow_private and not isinstance(pool_manager, ProxyManager):
        pool_manager.pool_classes_by_scheme = guarded_pool_classes()


def connector(
    *,
    max_connections: int,
    allow_private: bool,
    resolver: AbstractResolver | None = None,
    allowed: Callable[[_addresses.IPAddress], bool] = _addresses.is_global,
    ssl_context: ssl.SSLContext | bool = True,
) -> aiohttp.TCPConnector:
    """The TCP connector every outbound request goes through (see the module doc)."""
    if allow_private:
        return aiohttp.TCPConnector(
            limit=max_connections,
            limit_per_host=max_connections,
            resolver=resolver,
            ssl=ssl_context,
        )
    return aiohttp.TCPConnector(
        limit=max_connections,
        limit_per_host=max_connections,
        resolver=GuardedResolver(resolver, allowed),
        socket_factory=guarded_socket_factory(allowed),
        ssl=ssl_context,
    )


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

    Tests inject ``transport``; otherwise requests go through :func:`connector`.
    """
    if transport is None:
        from httpx_aiohttp import AiohttpTransport

        # The CA bundle httpx would use, on the guarded connector.
        context = ssl_context or httpx.create_ssl_context()

        def session() -> aiohttp.ClientSession:
            return aiohttp.ClientSession(
                connector=connector(
                    max_connections=max_connections,
                    allow_private=allow_private,
                    resolver=resolver,
                    ssl_context=context,
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
            )

        transport = AiohttpTransport(client=session)
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
    )


def make_session(
    *,
    timeout: float,
    max_connections: int,
    allow_private: bool = False,
    resolver: AbstractResolver | None = None,
    allowed: Callable[[_addresses.IPAddress], bool] = _addresses.is_global,
) -> aiohttp.ClientSession:
    """An aiohttp session for one destination; call from the event loop that uses it.

    The connection limit is at least the destination's concurrency (the engine
    bounds requests in flight), so requests never queue for a connection.
    Cookies are not kept: a receiver's Set-Cookie must not follow other leads.
    """
    return aiohttp.ClientSession(
        connector=connector(
            max_connections=max_connections,
            allow_private=allow_private,
            resolver=resolver,
            allowed=allowed,
        ),
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
    refused = address_refused(exc)
    if refused is not None:
        return PermanentError(f"{what} {refused}")
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


def reason(status: int) -> str:
    """The standard reason phrase of a status, for error messages.

    Never the receiver's own phrase or body: a receiver may echo the lead back.
    """
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
