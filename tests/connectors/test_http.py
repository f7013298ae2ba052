"""The outbound address guard at the transport seam (connectors/_http.py).

No traffic leaves the loopback: names are answered by an injected resolver (or
parsed as numeric hosts, never looked up), refused addresses are refused before
``connect()``, and the only sockets opened go to listeners on 127.0.0.0/8.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from bridge.errors import PermanentError, RetryableError
from connectors import _addresses, _http, _urllib3
from connectors.slack import SlackConnector, SlackSettings
from connectors.testing import sample_context
from connectors.webhook import WebhookConnector, WebhookSettings
from tests.connectors.fake_http import Answer, FakeHTTP

LEAD: dict[str, Any] = {"id": "led_1", "data": {"first_name": "Ann"}}
CARD: dict[str, Any] = {"title": "Ann", "lead_id": "led_1"}
# Kept before no_system_dns replaces it; only ever called with AI_NUMERICHOST.
_getaddrinfo = socket.getaddrinfo


class ScriptedResolver(AbstractResolver):
    """Answers from a script: one list of addresses per lookup, the last repeated.

    An entry ``None`` means "parse the host as a numeric address, the way
    getaddrinfo does" (AI_NUMERICHOST: never a DNS query).
    """

    def __init__(self, *answers: Sequence[str] | None) -> None:
        self.answers = list(answers)
        self.lookups: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        index = min(len(self.lookups), len(self.answers)) - 1
        answer = self.answers[index]
        if answer is None:
            infos = _getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
            answer = [str(info[4][0]) for info in infos]
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in answer
        ]

    async def close(self) -> None:
        pass


class Listener:
    """A loopback port that accepts nothing on its own: connections wait in the backlog."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = socket.create_server((host, port), backlog=16)
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])

    def connections(self) -> int:
        """How many connections reached this port (drains the backlog)."""
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return count
            conn.close()
            count += 1

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def victim() -> Iterator[Listener]:
    listener = Listener()
    yield listener
    listener.close()


@pytest.fixture
def no_system_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any lookup outside the injected resolver fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"unexpected system lookup of {args[:1]}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(asyncio.BaseEventLoop, "getaddrinfo", refuse)


def webhook(url: str, resolver: AbstractResolver, **settings: Any) -> WebhookConnector:
    return WebhookConnector(
        "hook", WebhookSettings.model_validate({"url": url, **settings}), resolver=resolver
    )


async def send(connector: WebhookConnector | SlackConnector, record: dict[str, Any]) -> Any:
    try:
        return await connector.send(record, sample_context(connector.name, "led_1"))
    finally:
        await connector.close()


@pytest.mark.parametrize(
    "host",
    [
        "2130706433",  # decimal 127.0.0.1
        "0177.0.0.1",  # octal
        "0x7f.1",  # hex, short form
        "0x7f000001",
        "127.1",
        "017700000001",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[64:ff9b::7f00:1]",
        "[2002:7f00:1::1]",
        "[0:0:0:0:0:0:0:1]",
    ],
)
async def test_loopback_spellings_never_connect(
    host: str, victim: Listener, no_system_dns: None
) -> None:
    resolver = ScriptedResolver(None)
    with pytest.raises(PermanentError):
        await send(webhook(f"http://{host}:{victim.port}/x", resolver), LEAD)
    assert victim.connections() == 0


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.5",
        "100.100.100.200",  # CGNAT range: a cloud metadata service
        "100.64.0.1",
        "169.254.169.254",
        "198.18.0.1",
        "192.0.2.1",
        "::1",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",  # NAT64
        "64:ff9b:1::a9fe:a9fe",
        "2002:a9fe:a9fe::1",  # 6to4
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "fd00::1",
        "fe80::1",
    ],
)
async def test_names_resolving_to_non_public_addresses_are_refused(
    address: str, victim: Listener, no_system_dns: None
) -> None:
    resolver = ScriptedResolver([address])
    with pytest.raises(PermanentError, match=r"resolves to the non-public address") as info:
        await send(webhook(f"http://inside.test:{victim.port}/x", resolver), LEAD)
    assert "allow_private: true" in str(info.value)
    assert resolver.lookups == ["inside.test"]
    assert victim.connections() == 0


async def test_a_mixed_answer_is_refused_before_any_connection(
    victim: Listener, no_system_dns: None
) -> None:
    # Public first, loopback second: the whole name is refused, nothing is dialled.
    resolver = ScriptedResolver(["93.184.215.14", "127.0.0.1"])
    with pytest.raises(PermanentError, match=r"127\.0\.0\.1"):
        await send(webhook(f"http://rebind.test:{victim.port}/x", resolver), LEAD)
    assert victim.connections() == 0


async def test_rebinding_between_lookups_reaches_only_the_checked_address(
    no_system_dns: None,
) -> None:
    """A name answering a public address first and 127.0.0.1 afterwards.

    The old guard resolved, checked, and let the client resolve again to
    connect: the second answer won. Here each lookup is the one connected to.
    127.0.0.2 stands in for the public address (the only policy change), so
    the test's traffic stays on the loopback.
    """
    victim = Listener("127.0.0.1")
    stand_in = ipaddress.IPv4Address("127.0.0.2")

    def allowed(ip: _addresses.IPAddress) -> bool:
        return ip == stand_in or _addresses.is_global(ip)

    resolver = ScriptedResolver(["127.0.0.2"], ["127.0.0.1"])
    try:
        with FakeHTTP(host="127.0.0.2", port=victim.port) as public:
            url = f"http://rebind.test:{victim.port}/x"
            transport = _http.Transport(
                timeout=5, max_connections=4, resolver=resolver, allowed=allowed
            )
            async with transport:
                answer = await transport.exchange("POST", url, b"{}", {})
                assert answer.status == 200
            assert len(public.requests) == 1
            # The verdict is not cached past the connection: a new lookup, a new check.
            transport = _http.Transport(
                timeout=5, max_connections=4, resolver=resolver, allowed=allowed
            )
            async with transport:
                with pytest.raises(httpx.ConnectError) as info:
                    await transport.exchange("POST", url, b"{}", {})
            refused = _http.classify_transport_error(info.value, "webhook")
            assert isinstance(refused, PermanentError)
            assert "non-public address 127.0.0.1" in str(refused)
        assert resolver.lookups == ["rebind.test", "rebind.test"]
        assert victim.connections() == 0
    finally:
        victim.close()


async def test_dns_failures_stay_retryable(no_system_dns: None) -> None:
    class Failing(ScriptedResolver):
        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[ResolveResult]:
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    with pytest.raises(RetryableError, match="connection failed"):
        await send(webhook("http://flaky.test/x", Failing()), LEAD)


async def test_allow_private_connects_to_loopback() -> None:
    with FakeHTTP() as server:
        resolver = ScriptedResolver(["127.0.0.1"])
        port = server.url.rsplit(":", 1)[1]
        result = await send(
            webhook(f"http://sidecar.test:{port}/x", resolver, allow_private=True), LEAD
        )
        assert result.status_code == 200
        assert len(server.requests) == 1


async def test_slack_goes_through_the_same_guard(victim: Listener, no_system_dns: None) -> None:
    url = f"http://hooks.test:{victim.port}/services/T/B/X"
    slack = SlackConnector(
        "slack",
        SlackSettings.model_validate({"webhook_url": url}),
        resolver=ScriptedResolver(["100.100.100.200"]),
    )
    with pytest.raises(PermanentError, match=r"non-public address 100\.100\.100\.200"):
        await send(slack, CARD)
    literal = SlackConnector(
        "slack",
        SlackSettings.model_validate({"webhook_url": f"http://127.0.0.1:{victim.port}/s"}),
    )
    with pytest.raises(PermanentError, match=r"non-public address 127\.0\.0\.1 refused"):
        await send(literal, CARD)
    assert victim.connections() == 0


async def test_slack_allow_private_delivers_on_loopback() -> None:
    with FakeHTTP() as server:
        slack = SlackConnector(
            "slack",
            SlackSettings.model_validate(
                {"webhook_url": server.url + "/services/T/B/X", "allow_private": True}
            ),
        )
        result = await send(slack, CARD)
        assert result.status_code == 200
        assert server.requests[0].json()["text"] == "New lead: Ann"


# --------------------------------------------------------------------------- urllib3 (SDKs)


def test_urllib3_connections_check_the_address_they_connect_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The blocking SDKs' seam: one lookup per connection, each answer checked,
    the connection made to a checked address (a rebinding name cannot switch)."""
    victim = Listener("127.0.0.1")
    stand_in = Listener("127.0.0.2", victim.port)
    lookups: list[str] = []
    answers = iter(["127.0.0.2", "127.0.0.1"])

    def getaddrinfo(host: str, port: int, *args: Any) -> list[Any]:
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    def allowed(ip: _addresses.IPAddress) -> bool:
        return ip == ipaddress.IPv4Address("127.0.0.2") or _addresses.is_global(ip)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    try:
        sock = _urllib3.guarded_create_connection(("rebind.test", victim.port), 5, allowed=allowed)
        sock.close()
        with pytest.raises(_http.AddressRefused, match=r"non-public address 127\.0\.0\.1"):
            _urllib3.guarded_create_connection(("rebind.test", victim.port), 5, allowed=allowed)
        assert lookups == ["rebind.test", "rebind.test"]
        assert stand_in.connections() == 1
        assert victim.connections() == 0
    finally:
        victim.close()
        stand_in.close()


def test_urllib3_pool_manager_refuses_private_hosts(victim: Listener) -> None:
    import urllib3

    manager = urllib3.PoolManager(retries=False)
    _urllib3.guard_pool_manager(manager, allow_private=False)
    for host in ("127.0.0.1", "localhost", "2130706433", "[::ffff:127.0.0.1]"):
        with pytest.raises(urllib3.exceptions.HTTPError) as info:
            manager.request("GET", f"http://{host}:{victim.port}/x", timeout=5)
        assert _http.address_refused(info.value) is not None, host
    assert victim.connections() == 0
    open_manager = urllib3.PoolManager(retries=False)
    _urllib3.guard_pool_manager(open_manager, allow_private=True)
    with FakeHTTP() as server:
        assert open_manager.request("GET", server.url + "/x", timeout=5).status == 200


# --------------------------------------------------------------------------- the transport


async def test_transport_speaks_httpx_and_decodes_a_body_once() -> None:
    import gzip

    record = b'{"id": "r1"}'
    answer = Answer(
        200,
        gzip.compress(record),
        {"Content-Encoding": "gzip", "Content-Type": "application/json", "Set-Cookie": "s=1"},
    )
    with FakeHTTP(answer) as server:
        client = _http.make_client(timeout=5, max_connections=2, allow_private=True)
        async with client:
            first = await client.post(server.url + "/a", content=b"{}", headers={"X-Case": "Kept"})
            await client.get(server.url + "/b")
        assert isinstance(first, httpx.Response)
        assert first.status_code == 200
        assert first.content == record
        assert first.json() == {"id": "r1"}
        assert first.reason_phrase == "OK"
        assert server.requests[0].headers["x-case"] == "Kept"
        assert server.requests[0].headers["user-agent"].startswith("lead-bridge")
        # Cookies are never kept: a receiver's Set-Cookie must not follow other leads.
        assert "cookie" not in server.requests[1].headers


async def test_transport_failures_are_httpx_errors() -> None:
    listener = Listener()
    port = listener.port
    listener.close()  # nothing listens there any more: connection refused
    transport = _http.Transport(timeout=5, max_connections=2, allow_private=True)
    async with transport:
        with pytest.raises(httpx.ConnectError) as info:
            await transport.exchange("POST", f"http://127.0.0.1:{port}/x", b"{}", {})
    assert isinstance(_http.classify_transport_error(info.value, "webhook"), RetryableError)


async def test_transport_timeout_is_an_httpx_timeout() -> None:
    with FakeHTTP(Answer(delay=30)) as server:
        client = _http.make_client(timeout=0.2, max_connections=2, allow_private=True)
        async with client:
            with pytest.raises(httpx.TimeoutException) as info:
                await client.get(server.url + "/slow")
            server.stop()
    error = _http.classify_transport_error(info.value, "Slack")
    assert isinstance(error, RetryableError)
    assert "timed out" in str(error)


def test_importing_the_seam_leaves_httpx_command_line_client_out() -> None:
    """httpx imports its CLI (rich, pygments) when installed; the service never runs it."""
    import subprocess
    import sys

    code = "import sys, connectors._http; print(sorted({'rich', 'pygments'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
