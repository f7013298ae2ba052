"""create_app(runtime): routes + lifespan, nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Receive, Scope, Send

from bridge.destinations import Runtime
from bridge.errors import StoreError
from bridge.intake import Intake, error, json_response
from bridge.logs import event, register_secret
from bridge.metrics import Metrics
from bridge.state import AppState
from bridge.store import Store, create_store

log = logging.getLogger("lead_bridge.app")


def register_secrets(runtime: Runtime) -> None:
    auth = runtime.config.auth
    admin = runtime.config.admin
    viewer = [admin.viewer_token] if admin.viewer_token else []
    for secret in [*auth.header_secrets, *auth.path_secrets, *admin.tokens, *viewer]:
        register_secret(secret.get_secret_value())
    if runtime.config.storage.search_key is not None:
        register_secret(runtime.config.storage.search_key.get_secret_value())


def create_app(
    runtime: Runtime,
    *,
    store: Store | None = None,
    metrics: Metrics | None = None,
    start_workers: bool | None = None,
    serve_metrics_port: bool = True,
) -> LeadBridgeApp:
    """The ASGI app. ``store`` given: the caller opens and closes it.
    ``serve_metrics_port``: start the separate ``metrics.port`` listener, if configured."""
    config = runtime.config
    owns_store = store is None
    the_store = store if store is not None else create_store(config.storage)
    state = AppState(runtime, the_store, metrics or Metrics())
    register_secrets(runtime)
    run_workers = config.worker.enabled if start_workers is None else start_workers

    intake = Intake(
        the_store,
        state.metrics,
        destinations=[d.name for d in runtime.active],
        header_secrets=[s.get_secret_value() for s in config.auth.header_secrets],
        path_secrets=[s.get_secret_value() for s in config.auth.path_secrets],
        max_body_bytes=config.server.max_body_bytes,
        max_inflight_bytes=config.storage.max_inflight_bytes,
        path=config.server.path,
        access_log=config.server.access_log,
    )

    async def healthz(request: Request) -> Response:
        return json_response(200, {"status": "ok"})

    async def readyz(request: Request) -> Response:
        try:
            await asyncio.wait_for(the_store.ping(), timeout=5)
        except (StoreError, TimeoutError):
            return json_response(503, {"status": "unavailable", "store": "unreachable"})
        # A delivery loop that crashed and waits for its restart: leads would rot unseen.
        down = state.engine.workers_down() if state.engine is not None else []
        if down:
            return json_response(503, {"status": "unavailable", "workers_down": down})
        return json_response(200, {"status": "ready"})

    async def not_found(request: Request, exc: Exception) -> Response:
        return error(404, "not_found", "no such endpoint")

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        return error(405, "method_not_allowed", "this method is not allowed here")

    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
    ]
    from bridge.admin import admin_routes, metrics_routes
    from bridge.console import console_routes

    routes.append(Mount("/admin/ui", routes=console_routes(state)))
    routes.append(Mount("/admin", routes=admin_routes(state)))
    routes += metrics_routes(state)  # /metrics behind the admin token, unless metrics.port

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if owns_store:
            await the_store.open()
        metrics_server = None
        if config.metrics.enabled and config.metrics.port is not None and serve_metrics_port:
            from bridge.metrics_server import start_metrics_server

            # Started here, not as a task, so a busy port fails the startup loudly.
            metrics_server = await start_metrics_server(
                state.metrics,
                config.metrics.host,
                config.metrics.port,
                store=the_store,
                finished_interval=config.metrics.finished_counts_interval,
            )
        if not config.auth.header_secrets and not config.auth.path_secrets:
            event(
                log,
                "startup",
                logging.WARNING,
                warning="the webhook endpoint is open: "
                "configure auth.header_secrets or auth.path_secrets",
            )
        if not runtime.active:
            event(
                log,
                "startup",
                logging.WARNING,
                warning="no destinations: leads are stored but not delivered",
            )
        if run_workers and runtime.active:
            from bridge.engine import Engine

            state.engine = Engine(the_store, runtime.active, state.metrics, config.worker)
            await state.engine.start()
            intake.on_commit = state.engine.wake
        if run_workers and config.alerts.url is not None:
            from bridge.notify import Notifier

            state.tasks.append(
                asyncio.create_task(
                    Notifier(
                        the_store,
                        config.alerts,
                        metrics=state.metrics,
                        finished_interval=config.metrics.finished_counts_interval,
                    ).run()
                )
            )
        from bridge.operations.drift import drift_task

        # Schema drift: the engine's unmapped-key tally into the store, and the gauge.
        state.tasks.append(
            asyncio.create_task(drift_task(the_store, runtime, state.metrics), name="drift")
        )
        if config.retention.enabled:
            from bridge.retention import retention_task

            state.tasks.append(
                asyncio.create_task(
                    retention_task(the_store, config.retention, metrics=state.metrics)
                )
            )
        event(
            log,
            "startup",
            path_auth=bool(config.auth.path_secrets),
            destinations=len(runtime.active),
        )
        try:
            yield
        finally:
            if state.engine is not None:
                await state.engine.stop(config.worker.shutdown_timeout)
            for task in state.tasks:
                task.cancel()
            for task in state.tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if metrics_server is not None:
                await metrics_server.close()
            if owns_store:
                await the_store.close()
            event(log, "shutdown")

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: method_not_allowed},
    )
    app.state.lb = state
    return LeadBridgeApp(app, intake)


class LeadBridgeApp:
    """The ASGI app: webhook requests go straight to intake (the hot path),
    everything else (probes, admin, lifespan, errors) through Starlette."""

    def __init__(self, app: Starlette, intake: Intake) -> None:
        self.app = app
        self.intake = intake
        self.state = app.state
        self.router = app.router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.intake.match(scope["path"])[0]:
            await self.intake(scope, receive, send)
            return
        await self.app(scope, receive, send)
