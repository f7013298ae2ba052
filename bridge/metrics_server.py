"""Serving ``/metrics``: behind the admin token on the main port, or on a plain-HTTP
port of its own (``metrics.port``), typically bound to 127.0.0.1 or a pod network.

Queue gauges are read from the store at scrape time, so every replica reports the
shared queue without a background loop (see :class:`QueueGauges` for what a
scrape costs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bridge.errors import ConfigError, StoreError
from bridge.logs import event
from bridge.metrics import Metrics
from bridge.store.base import STATUSES, DestinationStatus, Store

if TYPE_CHECKING:  # aiohttp is imported when the metrics port starts, not with this module
    from aiohttp import web

log = logging.getLogger("lead_bridge.metrics")

# A scrape must answer even when the database is slow; gauges then keep their last values.
STATUS_TIMEOUT = 5.0
# Seconds between two counts of the delivered and skipped deliveries (metrics.finished_counts_interval).
FINISHED_COUNTS_INTERVAL = 300.0


class QueueGauges:
    """The queue gauges of one :class:`Metrics`, refreshed from the store when scraped.

    What alerts watch (pending deliveries, in flight, the oldest pending one,
    dead letters) is counted at every scrape, through the store's partial
    indexes (:meth:`Store.queue_depths`): its cost follows the backlog, not the
    history. Delivered and skipped deliveries grow with the history, so they
    are counted at most every ``finished_interval`` seconds, by one scrape at a
    time, and the gauges show the last count meanwhile.
    """

    def __init__(
        self, metrics: Metrics, store: Store, finished_interval: float = FINISHED_COUNTS_INTERVAL
    ) -> None:
        self.metrics = metrics
        self.store = store
        self.finished_interval = finished_interval
        self._finished: dict[str, dict[str, int]] = {}
        self._counted_at: float | None = None  # monotonic
        self._counting: asyncio.Task[None] | None = None

    async def refresh(self, now: float) -> None:
        """Raises StoreError or TimeoutError; the gauges then keep their values."""
        started = time.monotonic()
        depths = await asyncio.wait_for(self.store.queue_depths(now), STATUS_TIMEOUT)
        due = self._counted_at is None or started - self._counted_at >= self.finished_interval
        if due and self._counting is None:
            self._counting = asyncio.ensure_future(self._count_finished())
        if self._counting is not None:
            left = max(0.0, STATUS_TIMEOUT - (time.monotonic() - started))
            # Shielded: a count that outlasts this scrape still lands for the next one.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._counting), left)
        by_name = {d.destination: d for d in depths}
        merged = []
        for dest in sorted(set(by_name) | set(self._finished)):
            depth = by_name.get(dest) or DestinationStatus(dest, {"pending": 0, "dead": 0}, 0, None)
            counts = {**depth.counts, **self._finished.get(dest, {})}
            merged.append(
                DestinationStatus(
                    dest,
                    {status: counts.get(status, 0) for status in STATUSES},
                    depth.in_flight,
                    depth.oldest_pending_at,
                )
            )
        self.metrics.update_destinations(merged, now)

    async def _count_finished(self) -> None:
        try:
            self._finished = await self.store.finished_counts()
            self._counted_at = time.monotonic()
        except StoreError as exc:
            event(log, "metrics_finished_counts_failed", logging.WARNING, error=type(exc).__name__)
        finally:
            self._counting = None


async def scrape(
    metrics: Metrics, queue: QueueGauges | None, *, now: float | None = None
) -> tuple[bytes, str]:
    """Refresh the queue gauges from the store, then render: (body, content type)."""
    if queue is not None:
        current = time.time() if now is None else now
        try:
            await queue.refresh(current)
        except (StoreError, TimeoutError) as exc:
            event(log, "metrics_queue_stale", logging.WARNING, error=type(exc).__name__)
    return metrics.render()


@dataclass
class MetricsServer:
    """A running plain-HTTP metrics listener; ``port`` is the bound one (0 picks a free port)."""

    runner: web.AppRunner
    host: str
    port: int

    async def close(self) -> None:
        await self.runner.cleanup()


async def start_metrics_server(
    metrics: Metrics,
    host: str,
    port: int,
    *,
    store: Store | None = None,
    finished_interval: float = FINISHED_COUNTS_INTERVAL,
) -> MetricsServer:
    from aiohttp import web

    queue = QueueGauges(metrics, store, finished_interval) if store is not None else None

    # aiohttp rather than a second uvicorn: it runs on the current loop and
    # installs no signal handlers, so it cannot interfere with the main server.
    async def handle(request: web.Request) -> web.Response:
        body, content_type = await scrape(metrics, queue)
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family)
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror}", "metrics.port"
        ) from exc
    await web.SockSite(runner, sock).start()
    bound = int(sock.getsockname()[1])
    event(log, "metrics_listening", host=host, port=bound)
    return MetricsServer(runner, host, bound)


async def serve_metrics(
    metrics: Metrics, host: str, port: int, *, store: Store | None = None
) -> None:
    """Serve ``GET /metrics`` on ``host:port`` until cancelled (run it as a task)."""
    server = await start_metrics_server(metrics, host, port, store=store)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()
