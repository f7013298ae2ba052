"""A destination that echoes the request back (in its body and its reason phrase)
must not put a lead's values into the service log, the stored errors or
`deliveries --json`: errors keep status codes, error codes and field names only."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from bridge.app import create_app
from bridge.cli import main
from bridge.destinations import load_runtime
from bridge.store.sqlite import SQLiteStore
from tests.conftest import make_lead
from tests.waiting import eventually

FIRST, LAST, COMPANY = "Zebulon", "Quattlebaum", "Xylocarp Widgets"
CANARIES = [FIRST, LAST, COMPANY, "Xylocarp"]


class Echo:
    """Answers every request 400 with the request body, and its start as the reason."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                text = body.decode("utf-8", "replace")
                self.send_response(400, "Bad " + " ".join(text.split())[:120])
                self.send_header("Content-Type", self.headers.get("Content-Type", "text/plain"))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def echo() -> Iterator[Echo]:
    server = Echo()
    yield server
    server.close()


def hits(text: str) -> list[str]:
    return [c for c in CANARIES if c.lower() in text.lower()]


async def test_an_echoing_destination_leaks_nothing(
    echo: Echo,
    write_config: Callable[..., Path],
    log_stream: io.StringIO,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    config = write_config(
        worker={"poll_interval": 0.02},
        destinations=[
            {
                "name": "chat",
                "type": "slack",
                "settings": {
                    "webhook_url": f"{echo.url}/services/T/B/X",
                    "allow_private": True,
                },
            },
            {
                "name": "hook",
                "type": "webhook",
                "settings": {"url": f"{echo.url}/in", "allow_private": True},
            },
        ],
    )
    runtime = load_runtime(config, env={})
    store = SQLiteStore(runtime.config.storage.url, synchronous="NORMAL")
    await store.open()
    app = create_app(runtime, store=store)
    lead = make_lead("led_echo_1", first_name=FIRST, last_name=LAST, organization_name=COMPANY)
    try:
        async with (
            app.router.lifespan_context(app),  # type: ignore[arg-type]
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://t") as c,
        ):
            answer = await c.post("/lead/webhook", json=[lead])
            assert answer.status_code == 200

            async def two_dead() -> bool:
                return len(await store.list_deliveries(status="dead")) == 2

            await eventually(two_dead, "two dead letters")
            dead = await store.list_deliveries(status="dead")
        attempts = await store.get_attempts("led_echo_1")
    finally:
        await store.close()

    assert sorted(d.destination for d in dead) == ["chat", "hook"]
    for delivery in dead:
        assert delivery.last_status_code == 400
        assert delivery.last_error is not None and "HTTP 400" in delivery.last_error
        assert hits(delivery.last_error) == [], delivery.last_error
    assert attempts and all(hits(a.error or "") == [] for a in attempts)
    assert hits(log_stream.getvalue()) == [], "lead value in the JSON log output"
    assert hits(caplog.text) == [], "lead value in a captured log record"

    capsys.readouterr()
    assert await asyncio.to_thread(main, ["deliveries", "--config", str(config), "--json"]) == 0
    out = capsys.readouterr().out
    assert "led_echo_1" in out
    assert hits(out) == [], "lead value in `deliveries --json`"
