from __future__ import annotations

import asyncio
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bridge.errors import PermanentError, RetryableError
from connectors import jsonl
from connectors.jsonl import JsonlConnector, JsonlSettings
from connectors.testing import Scenario, check_connector, sample_context

RECORD: dict[str, Any] = {"id": "led_1", "data": {"first_name": "Zoë", "email": "zoe@example.com"}}


def make(path: Path, **settings: Any) -> JsonlConnector:
    return JsonlConnector("audit", JsonlSettings.model_validate({"path": path, **settings}))


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


async def test_appends_one_envelope_per_record(tmp_path: Path) -> None:
    path = tmp_path / "out" / "leads.jsonl"
    connector = make(path)
    await connector.startup()
    first = await connector.send(RECORD, sample_context("audit", "led_1"))
    second = await connector.send({"n": 2}, sample_context("audit", "led_2"))
    await connector.close()
    rows = lines(path)
    assert [r["lead_id"] for r in rows] == ["led_1", "led_2"]
    assert rows[0]["destination"] == "audit"
    assert rows[0]["record"] == RECORD
    assert rows[0]["delivered_at"].endswith("Z")
    assert "Zoë" in path.read_text("utf-8")  # UTF-8, not \u escapes
    assert first.remote_id == "leads.jsonl:0"
    assert second.remote_id == f"leads.jsonl:{len(path.read_bytes().splitlines(True)[0])}"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "leads.jsonl"
    path.write_text('{"old": true}\n')
    connector = make(path)
    result = await connector.send(RECORD, sample_context())
    await connector.close()
    assert result.remote_id == "leads.jsonl:14"
    assert len(lines(path)) == 2


async def test_concurrent_sends_share_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsyncs: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(jsonl.os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd)))
    path = tmp_path / "leads.jsonl"
    connector = make(path)
    await connector.startup()
    results = await asyncio.gather(
        *(connector.send({"n": i}, sample_context("audit", f"led_{i}")) for i in range(200))
    )
    await connector.close()
    rows = lines(path)
    assert sorted(r["record"]["n"] for r in rows) == list(range(200))
    assert len({r.remote_id for r in results}) == 200
    assert 1 <= len(fsyncs) < 200
    # Each remote id points at its own line.
    data = path.read_bytes()
    for result, i in zip(results, range(200), strict=True):
        offset = int(str(result.remote_id).rsplit(":", 1)[1])
        line = data[offset : data.index(b"\n", offset)]
        assert json.loads(line)["record"] == {"n": i}


async def test_fsync_can_be_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Record the calls (the write runs in a worker thread: failing there would
    # only kill the flush task, not this test).
    fsyncs: list[int] = []
    monkeypatch.setattr(jsonl.os, "fsync", fsyncs.append)
    connector = make(tmp_path / "x.jsonl", fsync=False)
    await connector.send(RECORD, sample_context())
    await connector.close()
    assert fsyncs == []
    assert len(lines(tmp_path / "x.jsonl")) == 1


async def test_an_unexpected_write_error_fails_the_senders_instead_of_hanging_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: object, lines: list[bytes]) -> list[int]:
        raise RuntimeError("a bug in the writer")

    monkeypatch.setattr(jsonl._Writer, "write", broken)
    connector = make(tmp_path / "x.jsonl")
    sends = [
        asyncio.ensure_future(connector.send({"n": i}, sample_context("audit", f"led_{i}")))
        for i in range(3)
    ]
    results = await asyncio.wait_for(asyncio.gather(*sends, return_exceptions=True), 30)
    assert all(isinstance(r, RetryableError) for r in results), results
    with pytest.raises(RuntimeError, match="a bug in the writer"):
        await connector.close()


async def test_rotates_by_size(tmp_path: Path) -> None:
    path = tmp_path / "leads.jsonl"
    connector = make(path, rotate_bytes=1024)
    big = {"pad": "x" * 400}
    for i in range(5):
        await connector.send(big, sample_context("audit", f"led_{i}"))
    await connector.close()
    files = sorted(tmp_path.iterdir())
    assert len(files) == 3
    assert all(f.stat().st_size <= 1024 for f in files)
    assert sum(len(lines(f)) for f in files) == 5
    rotated = [f.name for f in files if f.name != "leads.jsonl"]
    assert all(name.startswith("leads.") and name.endswith(".jsonl") for name in rotated)


async def test_rotates_daily(tmp_path: Path) -> None:
    path = tmp_path / "leads.jsonl"
    path.write_text('{"yesterday": true}\n')
    two_days_ago = time.time() - 2 * 86400
    os.utime(path, (two_days_ago, two_days_ago))
    connector = make(path, rotate_daily=True)
    await connector.send(RECORD, sample_context())
    await connector.send(RECORD, sample_context())
    await connector.close()
    assert len(lines(path)) == 2
    (rotated,) = (f for f in tmp_path.iterdir() if f != path)
    assert lines(rotated) == [{"yesterday": True}]


async def test_unwritable_path_is_retryable_and_leaves_no_partial_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "leads.jsonl"
    connector = make(path)
    await connector.send({"n": 0}, sample_context())

    def full_disk(fd: int, data: Any) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(jsonl.os, "write", full_disk)
    with pytest.raises(RetryableError, match="No space left on device"):
        await connector.send({"n": 1}, sample_context())
    monkeypatch.undo()
    result = await connector.send({"n": 2}, sample_context())
    await connector.close()
    assert [r["record"]["n"] for r in lines(path)] == [0, 2]
    assert result.remote_id == f"leads.jsonl:{len(path.read_bytes().splitlines(True)[0])}"


async def test_directory_in_the_way_is_retryable(tmp_path: Path) -> None:
    (tmp_path / "leads.jsonl").mkdir()
    connector = make(tmp_path / "leads.jsonl")
    with pytest.raises(RetryableError, match="cannot write"):
        await connector.startup()
    await connector.close()


async def test_non_json_values_are_permanent(tmp_path: Path) -> None:
    connector = make(tmp_path / "x.jsonl")
    with pytest.raises(PermanentError, match="cannot be encoded as JSON"):
        await connector.send({"x": {1, 2}}, sample_context())
    await connector.close()


def test_settings() -> None:
    with pytest.raises(ValidationError, match="path"):
        JsonlSettings.model_validate({})
    with pytest.raises(ValidationError, match="greater than or equal to 1024"):
        JsonlSettings.model_validate({"path": "x", "rotate_bytes": 10})


async def test_contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk() -> None:
        def write(fd: int, data: Any) -> int:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(jsonl.os, "write", write)

    results = await check_connector(
        JsonlConnector,
        {"path": str(tmp_path / "leads.jsonl")},
        RECORD,
        scenarios=[
            Scenario("ok", lambda: None),
            Scenario("disk full", full_disk, expect=RetryableError),
            Scenario("recovered", monkeypatch.undo),
        ],
        accepted_fields=["anything"],
    )
    assert len(results) == 2
    assert len(lines(tmp_path / "leads.jsonl")) == 2
