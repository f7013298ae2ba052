"""A scripted HTTP server on 127.0.0.1 in a thread, for tests that need real sockets.

    with FakeHTTP() as server:
        server.queue(Answer(429, b"rate_limited", {"Retry-After": "7"}))
        ...  # point a connector at server.url + "/hook"
        server.requests[0].json()

Queued answers are used first, in order; afterwards every request gets
``default`` (200 ``ok``). ``Answer(delay=...)`` holds the answer back, for
timeout tests; ``stop()`` releases held answers at once.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class FakeHTTP:
    def __init__(
        self, default: Answer | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.default = default or Answer()
        self.requests: list[Seen] = []
        self._answers: deque[Answer] = deque()
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def queue(self, *answers: Answer) -> None:
        with self._lock:
            self._answers.extend(answers)

    def _next(self, seen: Seen) -> Answer:
        with self._lock:
            self.requests.append(seen)
            return self._answers.popleft() if self._answers else self.default

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                answer = fake._next(Seen(self.command, self.path, headers, body))
                if answer.delay:
                    fake._released.wait(answer.delay)
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(answer.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

            do_POST = do_PUT = do_PATCH = do_GET = do_HEAD = _any

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return Handler

    def start(self) -> FakeHTTP:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeHTTP:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
