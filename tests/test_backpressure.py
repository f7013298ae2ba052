"""Back-pressure: the bytes between intake and the store are bounded; beyond the
bound a webhook gets 503 with Retry-After at once, and memory stays bounded
while the SQLite writer is stalled."""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import signal
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.config_load import validate_config
from bridge.errors import ConfigError
from bridge.store.sqlite_frames import MAX_READ_BYTES, FrameReader
from tests.conftest import AppHarness
from tests.waiting import eventually

BOUND = 64 * 1024
BODY = 10_000  # bytes per request; six fit under the bound, the seventh does not


def body(lead_id: str) -> bytes:
    raw = json.dumps([{"id": lead_id, "data": {"note": ""}}])
    return raw.replace('"note": ""', f'"note": "{"n" * (BODY - len(raw))}"').encode()


def bounded(tmp_path: Path) -> dict[str, Any]:
    return {"url": f"sqlite:///{tmp_path / 'bp.db'}", "max_inflight_bytes": BOUND}


async def test_a_stalled_writer_gets_503_beyond_the_bound_and_bounded_memory(
    make_app: Callable[..., Any], tmp_path: Path
) -> None:
    app: AppHarness = await make_app(storage=bounded(tmp_path))
    intake = app.client._transport.app.intake  # type: ignore[attr-defined]
    assert intake.max_inflight_bytes == BOUND
    writer = app.store._writer
    assert writer is not None and writer.pid is not None
    os.kill(writer.pid, signal.SIGSTOP)  # like a writer waiting on a locked database
    try:
        posts = [asyncio.ensure_future(app.post(body(f"led_{i}"))) for i in range(20)]
        # Everything beyond the bound is answered at once, while the writer is stalled.
        # (and the six taken reach the writer: they may still be on their way to it)
        await eventually(
            lambda: sum(p.done() for p in posts) == 14 and len(writer._pending) == 6,
            "14 answers and 6 bodies at the writer",
        )
        refused = [p.result() for p in posts if p.done()]
        assert all(r.status_code == 503 for r in refused)
        assert all(r.headers["retry-after"] == "5" for r in refused)
        assert all(r.json()["error"] == "overloaded" for r in refused)
        # Bounded: six bodies wait for the writer, no more.
        assert intake.inflight_bytes == 6 * BODY <= BOUND
        assert len(writer._pending) == 6
        assert app.metrics.intake.requests["overloaded"] == 14
    finally:
        os.kill(writer.pid, signal.SIGCONT)
    answers = await asyncio.gather(*posts)
    accepted = [r for r in answers if r.status_code == 200]
    assert len(accepted) == 6 and intake.inflight_bytes == 0
    assert len(await app.lead_ids()) == 6  # what got 503 was not stored: the provider resends
    retried = await app.post(body("led_19"))
    assert retried.status_code == 200


async def test_one_body_larger_than_the_bound_is_still_taken_alone(
    make_app: Callable[..., Any], tmp_path: Path
) -> None:
    app: AppHarness = await make_app(storage=bounded(tmp_path))
    big = json.dumps([{"id": "led_big", "data": {"note": "b" * (2 * BOUND)}}]).encode()
    response = await app.post(big)
    assert response.status_code == 200
    assert await app.lead_ids() == ["led_big"]


def test_the_bound_is_validated_with_its_key_path() -> None:
    with pytest.raises(ConfigError) as info:
        validate_config({"storage": {"max_inflight_bytes": 1000}})
    assert "storage.max_inflight_bytes" in str(info.value)
    assert validate_config({}).storage.max_inflight_bytes == 32 << 20


def test_the_writer_reads_at_most_max_read_bytes_at_a_time() -> None:
    """The writer process does not pull everything queued in its socket into
    memory at once: the rest stays in the socket (and then in the parent)."""
    ours, theirs = socket.socketpair()
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    reader = FrameReader(theirs)
    payload = b"x" * (1 << 20)
    data = pickle.dumps(payload)
    frame = struct.pack(">I", len(data)) + data
    frames = MAX_READ_BYTES // len(frame) + 4
    sender = threading.Thread(target=ours.sendall, args=(frame * frames,))
    sender.start()
    try:
        first = reader.read_available(wait=True)
        assert first is not None
        assert 0 < len(first) * len(frame) <= MAX_READ_BYTES + (1 << 20) + len(frame)
        assert len(first) < frames
        got = len(first)
        while got < frames:
            more = reader.read_available(wait=True)
            assert more is not None
            got += len(more)
        sender.join()
    finally:
        ours.close()
        theirs.close()
    assert got == frames
