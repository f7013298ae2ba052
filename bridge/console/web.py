"""The console's request plumbing: who is logged in, CSRF on every POST,
read-only viewers, rendering, and the login/logout pages."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from bridge.console.assets import Assets
from bridge.console.forms import Form, FormError, read_form
from bridge.console.render import environment
from bridge.console.session import COOKIE, LoginLimiter, Principal, Sessions, csrf_ok
from bridge.errors import StoreError
from bridge.logs import event

if TYPE_CHECKING:
    from bridge.state import AppState

log = logging.getLogger("lead_bridge.console")

PREFIX = "/admin/ui"
# Pages hold personal data: never cached, never framed, no third-party anything.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
NAV = [
    ("overview", "Overview", "/"),
    ("leads", "Leads", "/leads"),
    ("dead", "Dead letters", "/dead-letters"),
    ("playground", "Mapping playground", "/playground"),
    ("destinations", "Destinations", "/destinations"),
    ("erase", "Erase", "/erase"),
]


class Refused(Exception):
    """A request the console answers with an error page (status, message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Call:
    """One request to a page: the principal, the parsed form of a POST."""

    request: Request
    principal: Principal
    form: Form | None

    @property
    def actor(self) -> str:
        """Who, in the audit log: the token's config key path, never its value."""
        return f"console:{self.principal.token_name}"


Page = Callable[["Console", Call], Awaitable[Response]]


class Console:
    def __init__(self, state: AppState, admin_tokens: list[str], viewer_token: str | None) -> None:
        self.state = state
        admin = state.runtime.config.admin
        self.sessions = Sessions(admin_tokens, viewer_token, admin.session_ttl)
        self.limiter = LoginLimiter()
        self.assets = Assets(PREFIX + "/static")
        self.templates = environment()
        self.templates.globals.update(prefix=PREFIX, nav=NAV, asset=self.assets.url)

    # ------------------------------------------------------------------ rendering

    def render(
        self,
        request: Request,
        template: str,
        principal: Principal | None,
        code: int = 200,
        **context: Any,
    ) -> Response:
        html = self.templates.get_template(template).render(
            principal=principal, request_path=request.url.path, **context
        )
        return HTMLResponse(html, status_code=code, headers=PAGE_HEADERS)

    def error_page(
        self, request: Request, principal: Principal | None, status: int, message: str
    ) -> Response:
        return self.render(request, "error.html", principal, status, status=status, message=message)

    # ------------------------------------------------------------------ pages

    def page(
        self, handler: Page, *, acts: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a page: a session is required, a POST needs the session's CSRF
        token, and a state-changing page (``acts``) refuses the read-only viewer."""

        async def endpoint(request: Request) -> Response:
            principal = self.sessions.read(request.cookies.get(COOKIE))
            if principal is None:
                if request.method == "GET":
                    return RedirectResponse(
                        f"{PREFIX}/login?next={_local(request.url.path)}", status_code=303
                    )
                return self.error_page(request, None, 401, "Your session has ended; log in again.")
            form: Form | None = None
            try:
                if request.method == "POST":
                    form = await read_form(request)
                    if not csrf_ok(principal, form.get("csrf")):
                        raise Refused(
                            403, "The form's CSRF token is missing or stale; reload the page."
                        )
                    if acts and not principal.can_act:
                        raise Refused(403, "The viewer token is read-only.")
                return await handler(self, Call(request, principal, form))
            except FormError as exc:
                return self.error_page(request, principal, 400, str(exc))
            except Refused as exc:
                event(log, "console_refused", status=exc.status, path=request.url.path)
                return self.error_page(request, principal, exc.status, str(exc))
            except StoreError:
                return self.error_page(
                    request, principal, 503, "The store is unavailable; try again shortly."
                )

        endpoint.__name__ = handler.__name__
        return endpoint

    # ------------------------------------------------------------------ login

    async def login_page(self, request: Request) -> Response:
        if self.sessions.read(request.cookies.get(COOKIE)) is not None:
            return RedirectResponse(PREFIX + "/", status_code=303)
        return self._login_form(request, 200, None)

    def _login_form(self, request: Request, status: int, message: str | None) -> Response:
        next_path = _local(request.query_params.get("next", ""))
        return self.render(
            request, "login.html", None, status, message=message, next_path=next_path
        )

    async def login(self, request: Request) -> Response:
        client = request.client.host if request.client else "unknown"
        wait = self.limiter.retry_after(client)
        if wait > 0:
            event(log, "console_login_limited", logging.WARNING, client=client)
            response = self._login_form(
                request, 429, f"Too many failed logins; try again in {int(wait) + 1} s."
            )
            response.headers["Retry-After"] = str(int(wait) + 1)
            return response
        try:
            form = await read_form(request, limit=16_384)
        except FormError as exc:
            return self._login_form(request, 400, str(exc))
        issued = self.sessions.login(form.get("token"))
        if issued is None:
            self.limiter.failed(client)
            event(log, "console_login", logging.WARNING, ok=False, client=client)
            return self._login_form(request, 401, "That token is not valid.")
        self.limiter.succeeded(client)
        cookie, principal = issued
        event(log, "console_login", ok=True, token=principal.token_name, client=client)
        target = _local(form.get("next")) or "/"
        response = RedirectResponse(PREFIX + target, status_code=303)
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=int(self.sessions.ttl),
            path=PREFIX,
            secure=True,
            httponly=True,
            samesite="strict",
        )
        return response

    async def logout(self, console: Console, call: Call) -> Response:
        event(log, "console_logout", token=call.actor)
        response = RedirectResponse(PREFIX + "/login", status_code=303)
        response.delete_cookie(COOKIE, path=PREFIX, secure=True, httponly=True, samesite="strict")
        return response


def _local(path: str | None) -> str:
    """A path inside the console (for ``next=``), or "" — never another site."""
    if not path:
        return ""
    parts = urlsplit(path)
    if parts.scheme or parts.netloc or not path.startswith("/") or path.startswith("//"):
        return ""
    if path.startswith(PREFIX):
        path = path[len(PREFIX) :] or "/"
    return path if path.startswith("/") and not path.startswith("//") else ""


def now() -> float:
    return time.time()
