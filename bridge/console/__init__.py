"""The operator console: server-rendered pages under ``/admin/ui/``.

Plain HTML forms that work without JavaScript (``static/console.js`` only
adds conveniences), served by ``lead-bridge serve`` itself. Off, like the
admin API, when no admin token is configured.

* :mod:`.session`  token -> signed session cookie, CSRF tokens, login rate limit
* :mod:`.web`      the request plumbing every page goes through
* :mod:`.pages`    one module per page; the queries live in :mod:`bridge.operations`
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute, Route

if TYPE_CHECKING:
    from bridge.state import AppState

# Every page's GET route, for bench/console.py (lead and destination names filled in).
PAGES = {
    "overview": "/admin/ui/",
    "leads": "/admin/ui/leads",
    "timeline": "/admin/ui/leads/{lead_id}",
    "dead_letters": "/admin/ui/dead-letters",
    "playground": "/admin/ui/playground",
    "destinations": "/admin/ui/destinations",
    "erase": "/admin/ui/erase",
}


def console_routes(state: AppState) -> list[BaseRoute]:
    """Routes to mount at ``/admin/ui``; none without an admin token."""
    admin = state.runtime.config.admin
    tokens = [t.get_secret_value() for t in admin.tokens]
    if not tokens:
        return []
    from bridge.console.pages import (
        dead_letters,
        destinations,
        erase,
        leads,
        overview,
        playground,
    )
    from bridge.console.web import Console

    console = Console(
        state, tokens, admin.viewer_token.get_secret_value() if admin.viewer_token else None
    )

    routes: list[BaseRoute] = [
        Route("/login", console.login_page, methods=["GET"]),
        Route("/login", console.login, methods=["POST"]),
        Route("/logout", console.page(console.logout), methods=["POST"]),
        Route("/static/{digest}/{name}", console.assets.serve, methods=["GET", "HEAD"]),
    ]
    for module in (overview, leads, dead_letters, playground, destinations, erase):
        routes += module.routes(console)
    return routes
