from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from bridge import __version__
from bridge.errors import PermanentError, RateLimited, RetryableError
from connectors.testing import Scenario, check_connector, sample_context
from connectors.webhook import (
    WebhookConnector,
    WebhookSettings,
    decode_secret,
    sign,
)
from tests.connectors.fake_http import Answer, FakeHTTP

URL = "https://receiver.example.test/leads"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
LEAD: dict[str, Any] = {
    "id": "led_slp3mt0qxvIXYUIK",
    "url": "https://some-site.com/page-with-lead-form/",
    "created": "2018-07-12T16:29:42Z",
    "data": {"first_name": "John", "last_name": "Doe", "email": "sergunich@gmail.com"},
}


@pytest.fixture
def server() -> Iterator[FakeHTTP]:
    with FakeHTTP() as fake:
        yield fake


def connector(**settings: Any) -> WebhookConnector:
    settings = {"url": URL, "allow_private": True, **settings}
    return WebhookConnector("hook", WebhookSettings.model_validate(settings))


def ctx() -> Any:
    return sample_context("hook", "led_slp3mt0qxvIXYUIK")


def verify(headers: dict[str, str], body: bytes, secret: str) -> bool:
    """A receiver's check, written from the spec rather than with our sign()."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        hmac.compare_digest(sig.partition(",")[2], expected)
        for sig in headers["webhook-signature"].split()
        if sig.startswith("v1,")
    )


def test_signature_matches_the_reference_vector() -> None:
    # The example from the Standard Webhooks / Svix reference implementations.
    signature = sign(
        decode_secret(SECRET), "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"url": "ftp://example.test/x"}, "expected an http:// or https:// URL"),
        ({"url": "file:///etc/passwd"}, "expected an http:// or https:// URL"),
        ({"url": "https://"}, "no host"),
        ({"url": "https://user:pw@example.test/"}, "credentials in the URL"),
        ({"url": URL, "secret": "abc"}, "whsec_"),
        ({"url": URL, "secret": "whsec_***notbase64"}, "not valid base64"),
        ({"url": URL, "secret": "whsec_c2hvcnQ="}, "too short"),
        ({"url": URL, "method": "DELETE"}, "POST"),
        ({"url": URL, "headers": {"Content-Type": "text/plain"}}, "set by the connector"),
        ({"url": URL, "headers": {"bad name": "x"}}, "not a valid header name"),
        ({"url": URL, "headers": {"X-A": "a\r\nX-B: b"}}, "line break"),
        ({"url": URL, "timeout": 0}, "greater than 0"),
        ({"url": URL, "verify": False}, "Extra inputs"),
    ],
)
def test_settings_errors_name_the_problem(settings: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        WebhookSettings.model_validate(settings)


def test_method_is_case_insensitive() -> None:
    assert WebhookSettings.model_validate({"url": URL, "method": "put"}).method == "PUT"


async def test_signed_post_of_the_record(server: FakeHTTP) -> None:
    server.queue(Answer(202, b'{"id": "rcv_42"}', {"Content-Type": "application/json"}))
    hook = connector(
        url=server.url + "/leads", secret=SECRET, headers={"Authorization": "Bearer t0k3n"}
    )
    await hook.startup()
    before = int(time.time())
    result = await hook.send(LEAD, ctx())
    await hook.close()
    assert result.remote_id == "rcv_42" and result.status_code == 202
    [request] = server.requests
    assert request.method == "POST" and request.path == "/leads"
    assert json.loads(request.body) == LEAD
    assert request.headers["content-type"] == "application/json"
    assert request.headers["authorization"] == "Bearer t0k3n"
    assert request.headers["user-agent"] == f"lead-bridge/{__version__}"
    assert request.headers["webhook-id"] == ctx().idempotency_key
    assert before <= int(request.headers["webhook-timestamp"]) <= before + 5
    assert verify(request.headers, request.body, SECRET)
    assert not verify(request.headers, request.body + b" ", SECRET)


async def test_webhook_id_is_stable_across_attempts(server: FakeHTTP) -> None:
    hook = connector(url=server.url, secret=SECRET)
    await hook.send(LEAD, ctx())
    await hook.send(LEAD, sample_context("hook", "led_slp3mt0qxvIXYUIK"))
    await hook.close()
    first, second = (seen.headers["webhook-id"] for seen in server.requests)
    assert first == second


async def test_unsigned_requests_still_carry_the_id(server: FakeHTTP) -> None:
    server.queue(Answer(204, b""))
    hook = connector(url=server.url, method="PUT")
    result = await hook.send(LEAD, ctx())
    await hook.close()
    assert result.remote_id is None and result.status_code == 204
    [seen] = server.requests
    assert seen.method == "PUT"
    assert "webhook-id" in seen.headers and "webhook-signature" not in seen.headers


async def test_non_ascii_and_non_string_keys_are_encoded(server: FakeHTTP) -> None:
    hook = connector(url=server.url)
    await hook.send({"name": "Zoë", "scores": {1: "a"}}, ctx())
    await hook.send({"big": 2**70}, ctx())  # beyond orjson's 64 bits: still sent
    await hook.close()
    body = server.requests[0].body
    assert "Zoë".encode() in body  # UTF-8, not \u escapes
    assert json.loads(body) == {"name": "Zoë", "scores": {"1": "a"}}
    assert json.loads(server.requests[1].body) == {"big": 2**70}


@pytest.mark.parametrize(
    ("status", "error", "message"),
    [
        (200, None, None),
        (201, None, None),
        (301, PermanentError, "HTTP 301"),
        (400, PermanentError, "HTTP 400"),
        (404, PermanentError, "HTTP 404"),
        (408, RetryableError, "HTTP 408"),
        (410, PermanentError, "endpoint is gone"),
        (422, PermanentError, "HTTP 422"),
        (429, RateLimited, "HTTP 429"),
        (500, RetryableError, "HTTP 500"),
        (503, RetryableError, "HTTP 503"),
    ],
)
async def test_status_classification(
    server: FakeHTTP, status: int, error: type[Exception] | None, message: str | None
) -> None:
    headers = {"Content-Type": "application/json"}
    if status == 301:
        headers["Location"] = server.url + "/elsewhere"
    if status in (429, 503):
        headers["Retry-After"] = "11"
    echo = json.dumps({"echo": LEAD["data"]["email"]}).encode()
    server.queue(Answer(status, echo, headers))
    hook = connector(url=server.url + "/in")
    if error is None:
        assert (await hook.send(LEAD, ctx())).status_code == status
    else:
        with pytest.raises(error, match=message) as info:
            await hook.send(LEAD, ctx())
        assert type(info.value) is error
        # A receiver echoing the payload must not put it into our stored error.
        assert "sergunich" not in str(info.value)
        if status in (429, 503):
            assert info.value.retry_after == 11.0  # type: ignore[attr-defined]
    await hook.close()
    assert [seen.path for seen in server.requests] == ["/in"]  # redirects are not followed


async def test_non_json_records_are_permanent() -> None:
    hook = connector()
    with pytest.raises(PermanentError, match="cannot be encoded as JSON"):
        await hook.send({"when": object()}, ctx())
    await hook.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/x",
        "http://localhost:9/x",
        "http://10.1.2.3/x",
        "http://192.168.0.10/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/x",
        "http://[::ffff:10.0.0.1]/x",
        "http://0.0.0.0/x",
        "http://224.0.0.1/x",
    ],
)
async def test_private_destinations_are_refused(url: str) -> None:
    hook = connector(url=url, allow_private=False)
    with pytest.raises(PermanentError, match="allow_private: true"):
        await hook.send(LEAD, ctx())
    await hook.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class HangUp:
    """Accepts connections, reads the request and closes without answering."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/x"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)

    def close(self) -> None:
        self.sock.close()


async def test_transport_errors_are_retryable() -> None:
    hook = connector(url=f"http://127.0.0.1:{closed_port()}/x")
    with pytest.raises(RetryableError, match="connection failed"):
        await hook.send(LEAD, ctx())
    await hook.close()
    hang_up = HangUp()
    hook = connector(url=hang_up.url)
    try:
        with pytest.raises(RetryableError, match="ServerDisconnected"):
            await hook.send(LEAD, ctx())
    finally:
        await hook.close()
        hang_up.close()


async def test_contract(server: FakeHTTP) -> None:
    def answer(status: int, body: bytes = b"", delay: float = 0.0) -> None:
        server.queue(Answer(status, body, {"Content-Type": "application/json"}, delay))

    results = await check_connector(
        WebhookConnector,
        {"url": server.url, "secret": SECRET, "allow_private": True, "timeout": 0.3},
        LEAD,
        scenarios=[
            Scenario("ok", lambda: answer(200, b'{"id": 7}')),
            Scenario("gone", lambda: answer(410), expect=PermanentError),
            Scenario("limited", lambda: answer(429), expect=RateLimited),
            Scenario("timeout", lambda: answer(408), expect=RetryableError),
            Scenario("refused", lambda: answer(422), expect=PermanentError),
            Scenario("unresponsive", lambda: answer(200, delay=2), expect=RetryableError),
        ],
        accepted_fields=["anything", "at.all"],
    )
    assert results[0].remote_id == "7"


async def test_real_transport_against_a_local_server() -> None:
    with FakeHTTP(default=Answer(200, b'{"id": "r1"}', {"Content-Type": "application/json"})) as s:
        s.queue(
            Answer(302, b"", {"Location": "http://127.0.0.1:1/"}),
            Answer(503, b"", {"Retry-After": "2"}),
            Answer(410, b"gone"),
        )
        hook = connector(url=s.url + "/in", secret=SECRET, method="PATCH")
        await hook.startup()
        try:
            with pytest.raises(PermanentError, match="HTTP 302"):
                await hook.send(LEAD, ctx())
            with pytest.raises(RetryableError) as down:
                await hook.send(LEAD, ctx())
            assert down.value.retry_after == 2.0
            with pytest.raises(PermanentError, match="gone"):
                await hook.send(LEAD, ctx())
            result = await hook.send(LEAD, ctx())
        finally:
            await hook.close()
        assert result.remote_id == "r1"
        seen = s.requests[-1]
        assert seen.method == "PATCH" and seen.path == "/in" and seen.json() == LEAD
        assert verify(seen.headers, seen.body, SECRET)
        assert len(s.requests) == 4  # the redirect was not followed


async def test_real_transport_timeout() -> None:
    with FakeHTTP() as server:
        server.queue(Answer(200, delay=5))
        hook = connector(url=server.url + "/slow", timeout=0.2)
        try:
            with pytest.raises(RetryableError, match="timed out"):
                await hook.send(LEAD, ctx())
        finally:
            await hook.close()
