"""Serving ``/metrics``: behind the admin token on the main port, or on a plain-HTTP
port of its own (``metrics.port``), typically bound to 127.0.0.1 or a pod network.

Queue gauges (depth, oldest pending age, dead letters) are read from the store at
scrape time, so every replica reports the shared queue without a background loop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass

from aiohttp import web

from bridge.errors import ConfigError, StoreError
from bridge.logs import event
from bridge.metrics import Metrics
from bridge.store.base import Store

log = logging.getLogger("lead_bridge.metrics")

# A scrape must answer even when the database is slow; gauges then keep their last values.
STATUS_TIMEOUT = 5.0


async def scrape(
    metrics: Metrics, store: Store | None, *, now: float | None = None
) -> tuple[bytes, str]:
    """Refresh the queue gauges from the store, then render: (body, content type)."""
    if store is not None:
        current = time.time() if now is None else now
        try:
            status = await asyncio.wait_for(store.status(current), timeout=STATUS_TIMEOUT)
        except (StoreError, TimeoutError) as exc:
            event(log, "metrics_queue_stale", logging.WARNING, error=type(exc).__name__)
        else:
            metrics.update_queue(status, current)
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
    metrics: Metrics, host: str, port: int, *, store: Store | None = None
) -> MetricsServer:
    # aiohttp rather than a second uvicorn: it runs on the current loop and
    # installs no signal handlers, so it cannot interfere with the main server.
    async def handle(request: web.Request) -> web.Response:
        body, content_type = await scrape(metrics, store)
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
