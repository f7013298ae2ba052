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

import uvloop
from http_sink import RequestProtocol

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


class SinkProtocol(RequestProtocol):
    def __init__(self, stats: Stats) -> None:
        super().__init__()
        self.stats = stats

    def respond(self, transport: asyncio.Transport) -> None:
        method = self.parser.get_method()
        if self.url == b"/stats":
            body = self.stats.as_json()
            head = f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n\r\n".encode()
            transport.write(head + body)
        elif self.url == b"/reset":
            self.stats.__init__()  # type: ignore[misc]
            transport.write(OK)
        elif method == b"POST":
            self.stats.seen(self.webhook_id)
            transport.write(OK)
        else:
            transport.write(OK)
        self.close_unless_keep_alive(transport)


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
