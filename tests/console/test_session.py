"""Session cookies, CSRF tokens and the login rate limit, without HTTP."""

from __future__ import annotations

from bridge.console.session import LoginLimiter, Sessions, csrf_ok

ADMIN, VIEWER = "admin-token-0123456789", "viewer-token-0123456789"


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_login_names_the_token_and_its_rights() -> None:
    sessions = Sessions([ADMIN, "second-admin-token"], VIEWER, ttl=60)

    admin = sessions.login(ADMIN)
    second = sessions.login("second-admin-token")
    viewer = sessions.login(VIEWER)

    assert admin is not None and second is not None and viewer is not None
    assert (admin[1].token_name, admin[1].can_act) == ("admin.tokens[0]", True)
    assert second[1].token_name == "admin.tokens[1]"
    assert (viewer[1].token_name, viewer[1].can_act) == ("admin.viewer_token", False)
    assert sessions.login("wrong") is None
    assert sessions.login("") is None
    for cookie, _ in (admin, second, viewer):
        assert ADMIN not in cookie and VIEWER not in cookie


def test_cookie_expires() -> None:
    clock = Clock()
    sessions = Sessions([ADMIN], None, ttl=60, clock=clock)
    issued = sessions.login(ADMIN)
    assert issued is not None
    clock.t += 59
    assert sessions.read(issued[0]) is not None
    clock.t += 2
    assert sessions.read(issued[0]) is None


def test_tampered_or_foreign_cookies_are_refused() -> None:
    sessions = Sessions([ADMIN], VIEWER, ttl=60)
    issued = sessions.login(VIEWER)
    assert issued is not None
    body, signature = issued[0].split(".")
    # A viewer rewriting its payload to name the admin token: the signature no longer fits.
    import base64

    payload = base64.urlsafe_b64decode(body + "==").decode()
    forged = base64.urlsafe_b64encode(
        payload.replace("admin.viewer_token", "admin.tokens[0]").encode()
    )
    assert sessions.read(f"{forged.decode().rstrip('=')}.{signature}") is None
    assert sessions.read(issued[0] + "x") is None
    assert sessions.read("garbage") is None
    assert sessions.read(None) is None
    # Rotating the token ends its sessions.
    assert Sessions([ADMIN], "new-viewer-token-000", ttl=60).read(issued[0]) is None


def test_csrf_token_is_per_session() -> None:
    sessions = Sessions([ADMIN], None, ttl=60)
    first, second = sessions.login(ADMIN), sessions.login(ADMIN)
    assert first is not None and second is not None
    assert csrf_ok(first[1], first[1].csrf)
    assert not csrf_ok(first[1], second[1].csrf)
    assert not csrf_ok(first[1], "")
    assert not csrf_ok(first[1], None)
    # Reading the cookie again gives the same token (it is derived, not stored).
    again = sessions.read(first[0])
    assert again is not None and again.csrf == first[1].csrf


def test_limiter_blocks_a_client_after_repeated_failures() -> None:
    clock = Clock()
    limiter = LoginLimiter(per_client=3, overall=100, window=60, clock=clock)
    for _ in range(3):
        assert limiter.retry_after("10.0.0.1") == 0
        limiter.failed("10.0.0.1")
    assert 59 <= limiter.retry_after("10.0.0.1") <= 60
    assert limiter.retry_after("10.0.0.2") == 0  # others are not blocked
    clock.t += 61
    assert limiter.retry_after("10.0.0.1") == 0


def test_limiter_caps_failures_from_everywhere() -> None:
    clock = Clock()
    limiter = LoginLimiter(per_client=5, overall=4, window=60, clock=clock)
    for i in range(4):
        limiter.failed(f"10.0.0.{i}")
    assert limiter.retry_after("10.9.9.9") > 0


def test_success_clears_the_clients_failures() -> None:
    limiter = LoginLimiter(per_client=2, overall=100, window=60, clock=Clock())
    limiter.failed("c")
    limiter.succeeded("c")
    limiter.failed("c")
    assert limiter.retry_after("c") == 0
