"""The outbound address guard for the blocking SDKs' urllib3 pools (requests under
simple-salesforce, the HubSpot SDK): the same check as :mod:`connectors._http`'s
transport, at urllib3's connection seam. One lookup per connection, every answer
checked, then a connection to a checked address (a rebinding name cannot switch).
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable
from typing import Any

from connectors import _addresses
from connectors._addresses import ALLOW_HINT, AddressRefused


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
