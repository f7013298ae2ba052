"""Slow clients against the real server stack (uvicorn with bridge.server_protocol,
configured by `serve`'s own uvicorn_config): dripping headers or a body, idle and
half-open connections, and the connection cap. Raw sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn

from bridge.cli.serve import uvicorn_config
from bridge.config import Config
from bridge.config_load import validate_config
from bridge.errors import ConfigError
from tests.processes import BridgeProcess, free_port
from tests.waiting import DEADLINE, wait_until

READ_TIMEOUT = 1.0
KEEP_ALIVE = 1.0
MAX_CONNECTIONS = 4
# Generous: the machine is shared; the server must act well within this (the
# suite's common deadline, only ever reached when something is wrong).
PATIENCE = DEADLINE
SLOW_STARTED = threading.Event()  # the app began answering /slow


async def app(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    if scope["path"] == "/slow":
        SLOW_STARTED.set()
        # The application's own time is not part of the read deadline.
        await asyncio.sleep(READ_TIMEOUT * 1.5)
    body = str(size).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Running:
    def __init__(self, server: uvicorn.Server, port: int) -> None:
        self.server = server
        self.port = port

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=PATIENCE)

    def open_connections(self) -> int:
        return len(self.server.server_state.connections)


@pytest.fixture
def running() -> Iterator[Running]:
    config = Config.model_validate(
        {
            "server": {
                "behind_proxy": True,
                "read_timeout": READ_TIMEOUT,
                "keep_alive_timeout": KEEP_ALIVE,
                "max_connections": MAX_CONNECTIONS,
            }
        }
    )
    port = free_port()
    server = uvicorn.Server(uvicorn_config(config, app, host="127.0.0.1", port=port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), "the server to start")
    assert server.started
    yield Running(server, port)
    server.should_exit = True
    thread.join(PATIENCE)


def drip(socks: list[socket.socket], payload: bytes, interval: float = 0.1) -> dict[int, Any]:
    """Send ``payload`` one byte per ``interval`` on every socket until the server
    closes each; returns, per socket index, (seconds until closed, bytes received)."""
    started = time.monotonic()
    received = {i: b"" for i in range(len(socks))}
    closed: dict[int, Any] = {}
    position = 0
    while len(closed) < len(socks):
        if time.monotonic() - started > PATIENCE:
            raise AssertionError(
                f"still open after {PATIENCE} s: {set(range(len(socks))) - set(closed)}"
            )
        live = [s for i, s in enumerate(socks) if i not in closed]
        readable, _, _ = select.select(live, [], [], interval)
        for sock in readable:
            index = socks.index(sock)
            try:
                data = sock.recv(4096)
            except ConnectionResetError:
                data = b""
            if data:
                received[index] += data
            else:
                closed[index] = (time.monotonic() - started, received[index])
        if not readable and position < len(payload):
            for i, sock in enumerate(socks):
                if i not in closed:
                    try:
                        sock.send(payload[position : position + 1])
                    except (BrokenPipeError, ConnectionResetError):
                        closed[i] = (time.monotonic() - started, received[i])
            position += 1
    return closed


HEADERS = (
    b"POST /lead/webhook HTTP/1.1\r\nHost: bridge\r\nContent-Type: application/json\r\n"
    b"Content-Length: 1000\r\n\r\n"
)


def test_dripped_headers_are_cut_off_at_the_deadline(running: Running) -> None:
    socks = [running.connect() for _ in range(3)]
    try:
        results = drip(socks, HEADERS * 10)
    finally:
        for sock in socks:
            sock.close()
    for elapsed, received in results.values():
        assert elapsed >= READ_TIMEOUT * 0.9
        assert received.startswith(b"HTTP/1.1 408 ")


def test_a_dripped_body_is_cut_off_at_the_deadline(running: Running) -> None:
    sock = running.connect()
    try:
        sock.sendall(HEADERS)
        ((elapsed, received),) = drip([sock], b"[" + b" " * 998 + b"]").values()
    finally:
        sock.close()
    assert elapsed >= READ_TIMEOUT * 0.9
    assert received.startswith(b"HTTP/1.1 408 ")


def test_a_silent_connection_is_closed(running: Running) -> None:
    sock = running.connect()
    try:
        ((elapsed, received),) = drip([sock], b"").values()
    finally:
        sock.close()
    assert elapsed >= READ_TIMEOUT * 0.9
    assert received.startswith(b"HTTP/1.1 408 ")


def test_idle_kept_alive_connection_is_closed_and_app_time_is_not_cut(running: Running) -> None:
    sock = running.connect()
    try:
        sock.sendall(b"POST /slow HTTP/1.1\r\nHost: bridge\r\nContent-Length: 2\r\n\r\n[]")
        ((elapsed, received),) = drip([sock], b"").values()
    finally:
        sock.close()
    # The answer came after the read deadline (the app took 1.5x it), then the
    # connection was closed as idle by the keep-alive timeout, without a 408.
    assert received.startswith(b"HTTP/1.1 200 OK")
    assert received.endswith(b"\r\n\r\n2")
    assert elapsed >= READ_TIMEOUT * 1.5 + KEEP_ALIVE * 0.9


def test_a_pipelined_request_waiting_for_a_slow_answer_is_not_cut_off(
    running: Running,
) -> None:
    SLOW_STARTED.clear()
    with running.connect() as sock:
        # The second request's headers arrive with the first; its body (larger
        # than uvicorn buffers before it pauses reading) once the server is busy
        # answering the first: the rest of it waits in the socket meanwhile.
        body = b"[" + b" " * 199_998 + b"]"
        sock.sendall(
            b"POST /slow HTTP/1.1\r\nHost: bridge\r\nContent-Length: 2\r\n\r\n[]"
            b"POST /x HTTP/1.1\r\nHost: bridge\r\nContent-Length: 200000\r\n\r\n"
        )
        assert SLOW_STARTED.wait(PATIENCE)
        sock.sendall(body)
        answers = b""
        while not answers.endswith(b"\r\n\r\n200000"):
            chunk = sock.recv(4096)
            assert chunk, f"closed early after {answers!r}"
            answers += chunk
    assert answers.count(b"HTTP/1.1 200 OK") == 2 and b"408" not in answers


def test_connections_beyond_the_cap_are_refused(running: Running) -> None:
    held = [running.connect() for _ in range(MAX_CONNECTIONS)]
    try:
        wait_until(lambda: running.open_connections() == MAX_CONNECTIONS, "connections to open")
        extra = running.connect()
        with extra:
            answer = b""
            while chunk := extra.recv(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b"retry-after: 1" in answer
        held.pop().close()
        wait_until(lambda: running.open_connections() < MAX_CONNECTIONS, "a connection to close")
        with running.connect() as sock:
            sock.sendall(b"POST /x HTTP/1.1\r\nHost: bridge\r\nContent-Length: 2\r\n\r\n[]")
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")
    finally:
        for sock in held:
            sock.close()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("read_timeout", 0),
        ("read_timeout", "soon"),
        ("keep_alive_timeout", -1),
        ("max_connections", 0),
    ],
)
def test_limits_are_validated_with_their_key_path(key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        validate_config({"server": {key: value}})
    assert any(path == f"server.{key}" for path, _ in info.value.problems)


@pytest.mark.slow
def test_serve_applies_the_configured_limits(tmp_path: Any) -> None:
    """`lead-bridge serve` itself, configured from YAML: dripped headers get 408."""
    import yaml

    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server": {
                    "host": "127.0.0.1",
                    "port": port,
                    "behind_proxy": True,
                    "read_timeout": "1s",
                    "max_connections": 50,
                },
                "storage": {"url": f"sqlite:///{tmp_path / 'bridge.db'}"},
            }
        )
    )
    proc = BridgeProcess(["serve", "--config", str(config)], cwd=tmp_path, log=tmp_path / "log")
    try:
        proc.wait_ready(f"http://127.0.0.1:{port}/healthz")
        socks = [socket.create_connection(("127.0.0.1", port), timeout=PATIENCE) for _ in range(2)]
        try:
            results = drip(socks, HEADERS * 10)
        finally:
            for sock in socks:
                sock.close()
        for elapsed, received in results.values():
            assert elapsed >= READ_TIMEOUT * 0.9
            assert received.startswith(b"HTTP/1.1 408 ")
        # The log handler buffers briefly: wait for the line.
        wait_until(lambda: "event=read_timeout phase=headers" in proc.output(), "the log line")
    finally:
        proc.close()
