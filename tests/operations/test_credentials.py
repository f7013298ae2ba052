"""check_destination: every failure becomes an answer to show, never an exception."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.destinations import Runtime
from bridge.operations.credentials import check_destination
from tests.connectors.fake_http import FakeHTTP


async def test_ok_refused_and_unreachable(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    with FakeHTTP() as gone:
        dead_url = gone.url + "/hook"
    runtime = make_runtime(
        destinations=[
            {"name": "file", "type": "jsonl", "settings": {"path": str(tmp_path / "o.jsonl")}},
            {"name": "guarded", "type": "webhook", "settings": {"url": "http://127.0.0.1:9/h"}},
            {
                "name": "down",
                "type": "webhook",
                "settings": {"url": dead_url, "allow_private": True, "timeout": 5},
            },
        ]
    )
    results: dict[str, Any] = {}
    for dest in runtime.destinations:
        results[dest.name] = await check_destination(dest)
    assert results["file"].ok is True
    assert results["guarded"].ok is False and "non-public address" in results["guarded"].detail
    assert results["down"].ok is False and "connection failed" in results["down"].detail


async def test_timeout_is_an_answer(make_runtime: Callable[..., Runtime]) -> None:
    from tests.connectors.fake_http import Answer

    with FakeHTTP() as slow:
        slow.queue(Answer(200, delay=30))
        runtime = make_runtime(
            destinations=[
                {
                    "name": "slow",
                    "type": "webhook",
                    "settings": {"url": slow.url + "/h", "allow_private": True, "timeout": 60},
                }
            ]
        )
        result = await check_destination(runtime.destinations[0], timeout=0.5)
    assert result.ok is False and result.detail == "no answer within 0.5s"
