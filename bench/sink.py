"""A fast local HTTP sink for bench/drain.py: answers every POST with 200 and counts
the ``webhook-id`` headers it saw, so the benchmark can check each delivery
arrived exactly once.

    python bench/sink.py --port 8089

A bare asyncio protocol on uvloop with httptools' parser (keep-alive, no
framework): it serves well over 10,000 requests/s on one core, several times
what a Python sender reaches, so it is not the bottleneck being measured.

``GET /stats`` returns ``{"requests", "unique", "first", "last"}`` (times are
``time.monotonic()``, the same clock as the benchmark process on Linux);
``POST /reset`` forgets everything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httptools
import uvloop

OK = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"


class Stats:
    def __init__(self) -> None:
        self.ids: set[bytes] = set()
        self.requests = 0
        self.first = 0.0
        self.last = 0.0

    def seen(self, webhook_id: bytes | None) -> None:
        now = time.monotonic()
        if not self.requests:
            self.first = now
        self.last = now
        self.requests += 1
        if webhook_id is not None:
            self.ids.add(webhook_id)

    def as_json(self) -> bytes:
        return json.dumps(
            {
                "requests": self.requests,
                "unique": len(self.ids),
                "first": self.first,
                "last": self.last,
            }
        ).encode()


class SinkProtocol(asyncio.Protocol):
    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.webhook_id: bytes | None = None

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass; it quacks like one.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""
        self.webhook_id = None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"webhook-id":
            self.webhook_id = value

    def on_message_complete(self) -> None:
        assert self.transport is not None
        method = self.parser.get_method()
        if self.url == b"/stats":
            body = self.stats.as_json()
            head = f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n\r\n".encode()
            self.transport.write(head + body)
        elif self.url == b"/reset":
            self.stats.__init__()  # type: ignore[misc]
            self.transport.write(OK)
        elif method == b"POST":
            self.stats.seen(self.webhook_id)
            self.transport.write(OK)
        else:
            self.transport.write(OK)
        if not self.parser.should_keep_alive():
            self.transport.close()


async def serve(host: str, port: int) -> None:
    stats = Stats()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SinkProtocol(stats), host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
