"""The aiohttp half of :mod:`connectors._http`: the guarded TCP connector and the
session it serves, and aiohttp's errors as httpx's. Imported by the transport when
it opens its session (the first request), so aiohttp loads off the start path.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable

import aiohttp
import httpx
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult

from bridge import USER_AGENT
from connectors import _addresses
from connectors._addresses import ALLOW_HINT, AddressRefused


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


def open_session(
    *,
    timeout: float,
    max_connections: int,
    allow_private: bool,
    resolver: AbstractResolver | None,
    allowed: Callable[[_addresses.IPAddress], bool],
    ssl_context: ssl.SSLContext,
) -> aiohttp.ClientSession:
    """One destination's session: the guarded connector, no cookies kept."""
    return aiohttp.ClientSession(
        connector=connector(
            max_connections=max_connections,
            allow_private=allow_private,
            resolver=resolver,
            allowed=allowed,
            ssl_context=ssl_context,
        ),
        timeout=aiohttp.ClientTimeout(total=timeout),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=True,
        headers={"User-Agent": USER_AGENT},
    )


def client_timeout(
    connect: float | None, read: float | None, pool: float | None
) -> aiohttp.ClientTimeout:
    """An httpx request's timeouts as aiohttp's."""
    return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read, connect=pool)


# aiohttp errors -> the httpx error a caller of the httpx API expects; the first
# match wins, so subclasses come before their bases.
ERRORS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (asyncio.TimeoutError, httpx.ReadTimeout),
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (ValueError, httpx.UnsupportedProtocol),  # a URL yarl cannot parse
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.ReadError),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),
    (aiohttp.ClientError, httpx.NetworkError),
    (OSError, httpx.ConnectError),
)
