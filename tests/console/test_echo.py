"""No console error page quotes its input (issue 14 item 3), like
tests/admin/test_echo.py for the admin API: every console page and form, a
canary in each path parameter and in each form or query field (one at a time,
the others absent), and every 4xx answer is searched for the canary."""

from __future__ import annotations

from typing import Any

from starlette.routing import Mount, Route

from tests.conftest import AppHarness
from tests.console.conftest import UI, login, seed

CANARY = "zq9x-canary-leak"
# Every field a console page reads from a form or the query string.
FIELDS = (
    "action",
    "all",
    "as_of",
    "cursor",
    "destination",
    "edit_destination",
    "edit_yaml",
    "email",
    "error_class",
    "force",
    "lead",
    "lead_id",
    "phone",
    "received_from",
    "received_to",
    "scope",
    "selected",
    "since",
    "status",
    "stored_id",
)
# The session's own pages: login/logout and the static files take no data fields.
SKIP = {"/login", "/logout", "/static/{digest}/{name}"}


def console_routes(h: AppHarness) -> list[tuple[str, str]]:
    app: Any = h.client._transport.app  # type: ignore[attr-defined]
    while not hasattr(app, "routes"):  # the middleware around the Starlette app
        app = app.app
    mount = next(r for r in app.routes if isinstance(r, Mount) and r.path == UI)
    found = []
    for route in mount.routes:
        if isinstance(route, Route) and route.path not in SKIP:
            for method in sorted((route.methods or set()) - {"HEAD"}):
                found.append((method, route.path))
    return found


def concrete(path: str) -> str:
    for param in ("{lead_id:path}", "{lead_id}", "{name}"):
        path = path.replace(param, CANARY)
    return path


async def test_no_console_error_page_echoes_its_input(console: AppHarness) -> None:
    await seed(console)
    csrf = await login(console.client)
    routes = console_routes(console)
    assert ("GET", "/leads/{lead_id:path}") in routes and len(routes) >= 10
    refused = 0
    for method, path in routes:
        url = UI + concrete(path)
        for field in (None, *FIELDS):
            data = {field: CANARY} if field else {}
            if method == "POST":
                response = await console.client.post(url, data={"csrf": csrf, **data})
            else:
                response = await console.client.get(url, params=data)
            if 400 <= response.status_code < 500:
                refused += 1
                where = f"{method} {path} with {field or 'no field'}"
                assert CANARY not in response.text, f"{where}: {response.status_code} echoes"
    # The probes did reach the error pages (404 lead/destination, 400 fields).
    assert refused >= 10, refused
