"""Salesforce's OAuth token flows: client credentials, JWT bearer, username-password.

Tokens are fetched with httpx from ``{login_url}/services/oauth2/token`` because
simple-salesforce hard-codes ``https://{domain}.salesforce.com`` for logins and so
cannot reach a My Domain proxy, a sandbox alias or a local fake; its built-in
refresh also retries without bound and drops our headers. simple-salesforce only
gets the resulting access token and instance.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import httpx

from bridge.errors import AuthError, PermanentError, RetryableError
from bridge.logs import event
from connectors import _http
from connectors.salesforce_errors import token_error
from connectors.salesforce_settings import Settings

log = logging.getLogger("connectors.salesforce")


async def fetch_token(
    client: httpx.AsyncClient, settings: Settings, destination: str
) -> tuple[str, str]:
    """Ask ``{login_url}/services/oauth2/token`` for an access token; returns
    ``(token, instance_url)`` or raises a classified error."""
    url = f"{settings.login_url}/services/oauth2/token"
    try:
        response = await client.post(
            url, data=grant(settings), headers={"Accept": "application/json"}
        )
    except _http.TRANSPORT_ERRORS as exc:
        raise _http.classify_transport_error(exc, "Salesforce") from exc
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if response.status_code != 200:
        event(
            log,
            "salesforce_token",
            logging.WARNING,
            destination=destination,
            mode=settings.auth.mode,
            outcome="refused",
            status=response.status_code,
        )
        raise token_error(response.status_code, answer)
    if not isinstance(answer, dict) or not answer.get("access_token"):
        raise RetryableError("Salesforce token endpoint answered without an access_token")
    token = str(answer["access_token"])
    instance_url = settings.instance_url or str(answer.get("instance_url") or "")
    if not instance_url.startswith("https://"):
        raise PermanentError(
            f"Salesforce token endpoint returned no https instance_url ({instance_url!r}); "
            "set instance_url in the destination settings"
        )
    event(log, "salesforce_token", destination=destination, mode=settings.auth.mode, outcome="ok")
    return token, instance_url


def grant(settings: Settings) -> dict[str, str]:
    """The token request's form for the configured OAuth flow."""
    auth = settings.auth
    secret = auth.client_secret.get_secret_value() if auth.client_secret else ""
    if auth.mode == "client_credentials":
        return {
            "grant_type": "client_credentials",
            "client_id": auth.client_id or "",
            "client_secret": secret,
        }
    if auth.mode == "password":
        password = auth.password.get_secret_value() if auth.password else ""
        token = auth.security_token.get_secret_value() if auth.security_token else ""
        return {
            "grant_type": "password",
            "client_id": auth.client_id or "",
            "client_secret": secret,
            "username": auth.username or "",
            "password": password + token,
        }
    return {
        "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "assertion": jwt_assertion(settings),
    }


def jwt_assertion(settings: Settings) -> str:
    """The JWT bearer flow's assertion, signed with auth.private_key_file (RS256)."""
    import jwt

    auth = settings.auth
    assert auth.private_key_file is not None
    claims = {
        "iss": auth.client_id,
        "sub": auth.username,
        # The authorization server: login/test.salesforce.com or the My Domain URL.
        "aud": settings.login_url,
        "exp": int(time.time()) + 180,
    }
    try:
        key = Path(auth.private_key_file).read_bytes()
        return jwt.encode(claims, key, algorithm="RS256")
    except (OSError, ValueError, jwt.PyJWTError) as exc:
        raise AuthError(
            f"cannot sign the JWT with auth.private_key_file ({type(exc).__name__}); "
            "expected a PEM RSA private key"
        ) from exc
