"""Fixtures shared across the suite: the seed lead, config files, an app on SQLite."""

from __future__ import annotations

import copy
import io
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bridge import logs
from bridge.app import create_app
from bridge.destinations import Runtime, load_runtime
from bridge.metrics import Metrics
from bridge.store.base import Outcome, Store
from bridge.store.sqlite import SQLiteStore
from tests.fakes import Script, install_scripts

FIXTURES = Path(__file__).parent / "fixtures"
SEED_LEAD: dict[str, Any] = json.loads((FIXTURES / "seed_lead.json").read_text())


@pytest.fixture
def scripts() -> Iterator[dict[str, Script]]:
    """This test's scripts for the scripted connector (tests.fakes), by name:
    empty at the start, gone at the end, so no test sees another's."""
    registry: dict[str, Script] = {}
    install_scripts(registry)
    yield registry
    install_scripts(None)


@pytest.fixture
def seed_lead() -> dict[str, Any]:
    return copy.deepcopy(SEED_LEAD)


def make_lead(lead_id: str, **data: Any) -> dict[str, Any]:
    lead = copy.deepcopy(SEED_LEAD)
    lead["id"] = lead_id
    lead["data"].update(data)
    return lead


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """Logging exactly as `lead-bridge serve --log-format json --log-level DEBUG` sets it up."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    out = io.StringIO()
    logs.configure("DEBUG", "json", out)
    # pytest's capture handler goes back on, after the redacting one
    for handler in saved[0]:
        root.addHandler(handler)
    yield out
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """A SQLite store of its own (tests/store/ has one per backend instead)."""
    s = SQLiteStore(f"sqlite:///{tmp_path / 'lb.db'}", synchronous="NORMAL")
    await s.open()
    yield s
    await s.close()


def spy_calls(obj: Any, *names: str) -> list[str]:
    """Wrap the methods ``names`` of ``obj``; the list fills with the name of
    each call, in order (which store reads a scrape or a check makes)."""
    calls: list[str] = []
    for name in names:
        real = getattr(obj, name)

        def spy(*args: Any, _name: str = name, _real: Any = real, **kwargs: Any) -> Any:
            calls.append(_name)
            return _real(*args, **kwargs)

        setattr(obj, name, spy)
    return calls


async def finish_pending(
    store: Store,
    destinations: list[str],
    at: float,
    dead: Mapping[tuple[str, str], tuple[str, int]],
) -> None:
    """Claim every pending delivery of ``destinations`` and finish it: dead with
    the (error, status code) given for its (lead id, destination) in ``dead``,
    delivered otherwise."""
    for dest in destinations:
        claims = await store.claim(destination=dest, limit=100, lease_seconds=60, now=at)
        outcomes = []
        for c in claims:
            failure = dead.get((c.lead_id, dest))
            if failure is None:
                outcomes.append(
                    Outcome(c.delivery_id, c.lease_token, "delivered", "delivered", at, 0.05)
                )
            else:
                error, code = failure
                outcomes.append(
                    Outcome(
                        c.delivery_id,
                        c.lease_token,
                        "dead",
                        "dead",
                        at,
                        0.2,
                        error=error,
                        status_code=code,
                    )
                )
        await store.finish(outcomes)


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a config file; keyword arguments replace top-level sections."""

    def write(**sections: Any) -> Path:
        tree: dict[str, Any] = {
            "server": {"behind_proxy": True},
            "storage": {"url": f"sqlite:///{tmp_path / 'lead-bridge.db'}"},
            "destinations": [],
        }
        tree.update(sections)
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(tree, sort_keys=False))
        return path

    return write


@pytest.fixture
def make_runtime(write_config: Callable[..., Path]) -> Callable[..., Runtime]:
    def make(**sections: Any) -> Runtime:
        return load_runtime(write_config(**sections), env={})

    return make


class AppHarness:
    """An app on a real SQLite store, driven in-process through httpx."""

    def __init__(self, runtime: Runtime, store: SQLiteStore, client: httpx.AsyncClient) -> None:
        self.runtime = runtime
        self.store = store
        self.client = client
        self.metrics: Metrics = client._transport.app.state.lb.metrics  # type: ignore[attr-defined]

    async def post(
        self, body: Any, *, path: str = "/lead/webhook", headers: dict[str, str] | None = None
    ) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs = {"content-type": "application/json", **(headers or {})}
        return await self.client.post(path, content=content, headers=hdrs)

    async def lead_ids(self) -> list[str]:
        def q(conn: Any) -> list[str]:
            return [r[0] for r in conn.execute("SELECT id FROM leads ORDER BY id")]

        return await self.store._read(q)

    async def quarantine(self) -> list[dict[str, Any]]:
        return await self.store.list_quarantine()


@pytest.fixture
async def make_app(
    make_runtime: Callable[..., Runtime],
) -> AsyncIterator[Callable[..., Any]]:
    opened: list[tuple[SQLiteStore, httpx.AsyncClient]] = []

    async def make(**sections: Any) -> AppHarness:
        runtime = make_runtime(**sections)
        store = SQLiteStore(runtime.config.storage.url)
        await store.open()
        app = create_app(runtime, store=store, start_workers=False)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://test")
        opened.append((store, client))
        return AppHarness(runtime, store, client)

    yield make
    for store, client in opened:
        await client.aclose()
        await store.close()
