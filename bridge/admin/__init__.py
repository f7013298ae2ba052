"""The admin HTTP API under ``/admin``: status, lead lookup, deliveries, replay,
search, dead letters, operator views, erasure, metrics — the CLI's operations
for the dashboard.

Protected by ``admin.tokens`` (``Authorization: Bearer <token>``), separate from
the webhook secrets. With no token configured there are no routes, so every
``/admin`` path answers 404. Each handler's docstring holds its OpenAPI
operation (YAML after ``---``); ``GET /admin/openapi.json`` assembles them
(:mod:`bridge.admin.openapi`).

    routes.py    the token check, status, lead, deliveries, replay, metrics
    leads.py     search, dead letters (list, preview, bulk replay)
    operator.py  overview, drift, unrouted, mapping playground, checks, audit
    privacy.py   erasure (preview, erase)
    http.py      what the handlers share: errors, parameters, JSON of records
    openapi.py   the OpenAPI document and its components
"""

from __future__ import annotations

from bridge.admin.routes import admin_routes, metrics_routes

__all__ = ["admin_routes", "metrics_routes"]
