"""A misbehaving HTTP receiver for bench/faults.py: the faults a real CRM or webhook
endpoint shows, in chosen proportions, and a record of what it accepted.

Per POST, drawn from a seeded random generator:

* ``error_rate`` (30 %): 500, 502 or 503;
* ``reset_rate`` (5 %): the connection is reset (RST) without an answer;
* ``hang_rate`` (5 %): no answer at all, the connection stays open until the
  sender gives up;
* bursts of 429: every ``burst_every`` requests, the next ``burst_len`` get 429
  with an absurd ``Retry-After`` (``1e12``, ``inf``, a date in 2099, ``nan``,
  a negative number, a day);
* leads whose id falls in the ``poison_rate`` share (decided by the id, so the
  same lead is refused every time) get 422: the only failures that should end
  as dead letters;
* otherwise 200, and the lead id and the ``webhook-id`` header (the sender's
  idempotency key) are recorded per path (one path per destination).

``POST /alerts`` is exempt from faults: it records the service's own notices
(``alerts.url``), so the benchmark can show what an operator would have been told.

It runs on the caller's event loop (``await sink.start()``), so the benchmark
reads its record directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from http_sink import RequestProtocol

ABSURD_RETRY_AFTER = (
    "1e12",
    "inf",
    "Thu, 01 Jan 2099 00:00:00 GMT",
    "nan",
    "-30",
    "86400",
)


@dataclass
class Faults:
    error_rate: float = 0.30
    reset_rate: float = 0.05
    hang_rate: float = 0.05
    burst_every: int = 400
    burst_len: int = 8
    poison_rate: float = 0.01
    seed: int = 12


def poisoned(lead_id: str, rate: float) -> bool:
    """Refused permanently (422) by the sink: decided by the id alone."""
    return zlib.crc32(lead_id.encode()) % 10_000 < rate * 10_000


@dataclass
class Record:
    # (path, lead id) -> every webhook-id of a request answered 200, in order
    accepted: defaultdict[tuple[str, str], list[str]] = field(
        default_factory=lambda: defaultdict(list)
    )
    answers: Counter[str] = field(default_factory=Counter)  # by kind: 200, 5xx, reset, ...
    notices: list[bytes] = field(default_factory=list)  # bodies posted to /alerts
    requests: int = 0


def _response(status: int, reason: str, headers: dict[str, str] | None = None) -> bytes:
    body = reason.encode()
    head = [f"HTTP/1.1 {status} {reason}", f"content-length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class _Protocol(RequestProtocol):
    def __init__(self, sink: FaultySink) -> None:
        super().__init__()
        self.sink = sink
        self.hung = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.sink.connections.add(self.transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.sink.connections.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        if not self.hung:
            super().data_received(data)

    def respond(self, transport: asyncio.Transport) -> None:
        webhook_id = (self.webhook_id or b"").decode()
        kind, answer = self.sink.decide(self.url.decode(), bytes(self.body), webhook_id)
        if kind == "reset":
            transport.abort()  # RST, no answer
        elif kind == "hang":
            self.hung = True  # answer nothing; the sender times out and closes
        else:
            transport.write(answer)
            self.close_unless_keep_alive(transport)


class FaultySink:
    def __init__(self, faults: Faults, host: str = "127.0.0.1") -> None:
        self.faults = faults
        self.host = host
        self.port = 0
        self.record = Record()
        self.rng = random.Random(faults.seed)
        self.connections: set[asyncio.Transport] = set()
        self._burst_left = 0
        self._absurd = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Protocol(self), self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for transport in list(self.connections):
            transport.abort()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    def decide(self, path: str, body: bytes, webhook_id: str) -> tuple[str, bytes]:
        """What to do with one request: (kind, the bytes to answer)."""
        rec, f = self.record, self.faults
        if path == "/alerts":
            rec.notices.append(body)
            return "200", _response(200, "OK")
        rec.requests += 1
        try:
            lead_id = str(json.loads(body)["id"])
        except (ValueError, KeyError, TypeError):
            rec.answers["400"] += 1
            return "400", _response(400, "Bad Request")
        if f.burst_every and rec.requests % f.burst_every == 0:
            self._burst_left = f.burst_len
        if self._burst_left > 0:
            self._burst_left -= 1
            value = ABSURD_RETRY_AFTER[self._absurd % len(ABSURD_RETRY_AFTER)]
            self._absurd += 1
            rec.answers["429"] += 1
            return "429", _response(429, "Too Many Requests", {"Retry-After": value})
        if poisoned(lead_id, f.poison_rate):
            rec.answers["422"] += 1
            return "422", _response(422, "Unprocessable Entity")
        draw = self.rng.random()
        if draw < f.error_rate:
            status = self.rng.choice((500, 502, 503))
            rec.answers["5xx"] += 1
            return "5xx", _response(status, "Server Error")
        draw -= f.error_rate
        if draw < f.reset_rate:
            rec.answers["reset"] += 1
            return "reset", b""
        draw -= f.reset_rate
        if draw < f.hang_rate:
            rec.answers["hang"] += 1
            return "hang", b""
        rec.answers["200"] += 1
        rec.accepted[(path, lead_id)].append(webhook_id)
        return "200", _response(200, "OK")
