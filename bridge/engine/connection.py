"""A destination's connector: created and started once, shared by its deliveries.

A connector that cannot start does not stop the claims: each claimed delivery
fails with the startup error, so it is retried on the schedule, dead-lettered
(credentials, config) and shown by `show`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from bridge.destinations import Destination
from bridge.engine.outcomes import safe_error
from bridge.errors import ConfigError, DeliveryError, PermanentError, RetryableError
from bridge.logs import event
from bridge.retry import Clock
from connectors.base import Connector

log = logging.getLogger("lead_bridge.engine")

# How long a destination's connector startup failure waits before trying again.
STARTUP_RETRY = 30.0


class ConnectorHandle:
    def __init__(
        self,
        destination: Destination,
        clock: Clock,
        request_gate: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.dest = destination
        # What a connector awaits before its further requests within one call.
        self.request_gate = request_gate
        self.name = destination.name
        self.timeout = destination.config.retry.timeout
        self.clock = clock
        self.connector: Connector | None = None
        self.started = False
        # Leads per API call; known once the connector is created (1: no batching).
        self.batch = 1
        self._lock = asyncio.Lock()
        self._error: DeliveryError | None = None
        self._failed_at = 0.0

    async def try_start(self) -> None:
        with contextlib.suppress(Exception):
            await self.ensure_started()

    async def ensure_started(self, timeout: float | None = None) -> Connector:
        """The started connector, or raise why it cannot start (as a DeliveryError).

        Concurrent deliveries share one startup, and a failure is remembered for
        STARTUP_RETRY seconds rather than retried by every delivery. ``timeout``
        (at most retry.timeout): what is left of the attempt's deadline.
        """
        if self.started and self.connector is not None:
            return self.connector
        async with self._lock:
            if self.started and self.connector is not None:
                return self.connector
            now = self.clock()
            if self._error is not None and now - self._failed_at < STARTUP_RETRY:
                raise self._error
            limit = self.timeout if timeout is None else max(0.0, timeout)
            try:
                if self.connector is None:
                    self.connector = self.dest.create_connector()
                    self.connector.request_gate = self.request_gate
                    self.batch = self._batch_size(self.connector)
                async with asyncio.timeout(limit):
                    await self.connector.startup()
            except Exception as exc:
                error = startup_error(exc, limit)
                self._error, self._failed_at = error, now
                event(
                    log,
                    "connector_startup_failed",
                    logging.ERROR,
                    destination=self.name,
                    error=error.message,
                )
                raise error from exc
            self.started = True
            self._error = None
            return self.connector

    def _batch_size(self, connector: Connector) -> int:
        limit = max(1, connector.batch_limit())
        wanted = self.dest.config.flow.batch_size
        return min(limit, wanted) if wanted is not None else limit

    async def close(self) -> None:
        if self.connector is not None:
            with contextlib.suppress(Exception):
                await self.connector.close()


def startup_error(exc: BaseException, timeout: float) -> DeliveryError:
    """Why a connector cannot start, in the delivery error taxonomy."""
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, TimeoutError):
        return RetryableError(f"connector startup timed out after {timeout:g}s")
    if isinstance(exc, ConfigError):
        return PermanentError(f"connector cannot start: {exc}")
    return RetryableError(f"connector startup failed: {safe_error(exc)}")
