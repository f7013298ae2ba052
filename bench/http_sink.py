"""The HTTP/1.1 request reading shared by the benchmarks' receivers (bench/sink.py,
bench/faulty_sink.py): a bare asyncio protocol with httptools' parser, keep-alive,
no framework. A subclass answers each complete request in :meth:`respond`."""

from __future__ import annotations

import asyncio

import httptools


class RequestProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.body = bytearray()
        self.webhook_id: bytes | None = None  # the sender's idempotency key

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
        self.url, self.body, self.webhook_id = b"", bytearray(), None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"webhook-id":
            self.webhook_id = value

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        assert self.transport is not None
        self.respond(self.transport)

    def respond(self, transport: asyncio.Transport) -> None:
        raise NotImplementedError

    def close_unless_keep_alive(self, transport: asyncio.Transport) -> None:
        if not self.parser.should_keep_alive():
            transport.close()
