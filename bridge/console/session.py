"""Console logins: a token exchanged for a signed session cookie, CSRF tokens,
and the login rate limit.

Nothing is stored server-side. A session cookie is ``payload.signature``: the
payload names the token (its config key path, e.g. ``admin.tokens[0]``), the
expiry and a random nonce; the signature is an HMAC keyed by a key derived
from that token. Removing or rotating a token therefore ends its sessions, and
a viewer cannot mint an admin session. The CSRF token of a session is an HMAC
of its nonce, so it needs no storage either.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

COOKIE = "lb_console"
_KEY_LABEL = b"lead-bridge console session v1"


@dataclass(frozen=True)
class Principal:
    """Who is logged in: the token's name (never its value) and what it may do."""

    token_name: str
    can_act: bool  # False for the viewer token: read-only
    csrf: str
    expires: float


@dataclass(frozen=True)
class _Token:
    name: str
    secret: bytes
    can_act: bool
    key: bytes


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    """Issues and checks session cookies for the configured tokens."""

    def __init__(
        self,
        admin_tokens: list[str],
        viewer_token: str | None,
        ttl: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        named = [(f"admin.tokens[{i}]", t, True) for i, t in enumerate(admin_tokens)]
        if viewer_token:
            named.append(("admin.viewer_token", viewer_token, False))
        self._tokens = {
            name: _Token(
                name,
                value.encode(),
                can_act,
                hmac.new(value.encode(), _KEY_LABEL, hashlib.sha256).digest(),
            )
            for name, value, can_act in named
        }
        self.ttl = ttl
        self._clock = clock

    def login(self, given: str) -> tuple[str, Principal] | None:
        """The cookie value and principal for a correct token, else None."""
        candidate = given.strip().encode()
        found: _Token | None = None
        # Compare against every token so the time taken says nothing about which matched.
        for token in self._tokens.values():
            if hmac.compare_digest(candidate, token.secret) and found is None:
                found = token
        if found is None or not candidate:
            return None
        expires = int(self._clock() + self.ttl)
        payload = f"{found.name}|{expires}|{secrets.token_urlsafe(16)}".encode()
        cookie = f"{_b64(payload)}.{_b64(self._sign(found, payload))}"
        principal = self.read(cookie)
        assert principal is not None
        return cookie, principal

    def read(self, cookie: str | None) -> Principal | None:
        """The principal of a valid, unexpired cookie; None otherwise."""
        if not cookie or cookie.count(".") != 1:
            return None
        body, signature = cookie.split(".")
        try:
            payload = _unb64(body)
            given = _unb64(signature)
            name, expires_text, nonce = payload.decode().split("|")
            expires = float(int(expires_text))
        except (ValueError, UnicodeDecodeError):
            return None
        token = self._tokens.get(name)
        if token is None or not hmac.compare_digest(given, self._sign(token, payload)):
            return None
        if expires <= self._clock():
            return None
        csrf = _b64(hmac.new(token.key, b"csrf|" + nonce.encode(), hashlib.sha256).digest())
        return Principal(name, token.can_act, csrf, expires)

    @staticmethod
    def _sign(token: _Token, payload: bytes) -> bytes:
        return hmac.new(token.key, payload, hashlib.sha256).digest()


def csrf_ok(principal: Principal, submitted: str | None) -> bool:
    return bool(submitted) and hmac.compare_digest(
        principal.csrf.encode(), (submitted or "").encode()
    )


class LoginLimiter:
    """Failed logins allowed per client address (and from everywhere together)
    within a sliding window; beyond that, logins are refused until it slides."""

    def __init__(
        self,
        per_client: int = 5,
        overall: int = 50,
        window: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_client = per_client
        self.overall = overall
        self.window = window
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()

    def retry_after(self, client: str) -> float:
        """Seconds until ``client`` may try again; 0 when it may now."""
        now = self._clock()
        self._expire(now)
        waits = [0.0]
        mine = self._failures.get(client)
        if mine is not None and len(mine) >= self.per_client:
            waits.append(mine[0] + self.window - now)
        if len(self._all) >= self.overall:
            waits.append(self._all[0] + self.window - now)
        return max(waits)

    def failed(self, client: str) -> None:
        now = self._clock()
        self._failures.setdefault(client, deque()).append(now)
        self._all.append(now)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)

    def _expire(self, now: float) -> None:
        cutoff = now - self.window
        while self._all and self._all[0] <= cutoff:
            self._all.popleft()
        for client in list(self._failures):
            times = self._failures[client]
            while times and times[0] <= cutoff:
                times.popleft()
            if not times:
                del self._failures[client]
