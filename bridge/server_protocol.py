"""uvicorn's HTTP protocol with a request deadline and a connection cap.

uvicorn has no read timeout: a client sending its headers or body one byte at
a time holds a connection forever, and a connection that sends nothing is
never closed (the keep-alive timer only starts after a first response). This
protocol adds, per connection:

* a deadline (``server.read_timeout``) for receiving one request, headers and
  body together, counted from the connection's start for the first request and
  from the request's first byte afterwards. When it passes, the connection is
  closed (with ``408`` first if no answer has started). Idle time between
  requests is uvicorn's keep-alive timeout (``server.keep_alive_timeout``);
* a cap on open connections (``server.max_connections``): one more is
  answered ``503`` with ``Retry-After`` and closed at once, before any of it is read.

The deadline stops when the request's body is complete, so the application's
own time (storing the leads) is never cut short; a pipelined request waiting
for the answer before it is not cut off either.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bridge.logs import event

log = logging.getLogger("lead_bridge.server")

_TIMEOUT_408 = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_BUSY_503 = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n"
    b"retry-after: 1\r\nconnection: close\r\n\r\n"
)
# At most one "too many connections" line per interval: a flood must not flood the log.
_REFUSAL_LOG_INTERVAL = 10.0


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """Set ``read_timeout`` and ``max_connections`` in a subclass (see :func:`protocol`)."""

    read_timeout: float = 30.0
    max_connections: int | None = None
    _last_refusal_log = 0.0
    _refused_since_log = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.max_connections is not None and len(self.connections) > self.max_connections:
            self._refuse()
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and not self.transport.is_closing():
            self._arm()  # bytes of a next request on a kept-alive connection
        super().data_received(data)

    # ------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm()

    def _headers_done(self) -> bool:
        # uvicorn builds a new scope per request and its cycle from that scope
        # once the headers are in: no per-request hook of our own needed.
        cycle = self.cycle
        return cycle is not None and cycle.scope is self.scope

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    # ------------------------------------------------------------ the deadline

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.read_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.pipeline:
            # A pipelined request waits for the answer to the one before it,
            # with reading paused by the server: that wait is not the client's.
            self._arm()
            return
        headers_done = self._headers_done()
        answered = headers_done and self.cycle.response_started
        phase = "body" if headers_done else "headers"
        event(log, "read_timeout", phase=phase, timeout_s=self.read_timeout)
        if not answered:
            self.transport.write(_TIMEOUT_408)
        self.transport.close()

    def _refuse(self) -> None:
        cls = type(self)
        cls._refused_since_log += 1
        now = time.monotonic()
        if now - cls._last_refusal_log >= _REFUSAL_LOG_INTERVAL:
            event(
                log,
                "connection_refused",
                logging.WARNING,
                reason="max_connections",
                max_connections=self.max_connections,
                refused=cls._refused_since_log,
            )
            cls._last_refusal_log, cls._refused_since_log = now, 0
        self.transport.write(_BUSY_503)
        self.transport.close()


def protocol(read_timeout: float, max_connections: int | None) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)`` with these limits."""
    return type(
        "LeadBridgeHttpProtocol",
        (LimitedHttpToolsProtocol,),
        {"read_timeout": read_timeout, "max_connections": max_connections},
    )
