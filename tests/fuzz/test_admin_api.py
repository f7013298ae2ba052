"""The admin API driven from its own OpenAPI description (schemathesis): every
documented operation, with and without the token, positive and negative
examples; never a 5xx, every response as the description says."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from hypothesis import given, note
from schemathesis import GenerationMode
from schemathesis.core.parameters import ParameterLocation
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import negative_data_rejection

from bridge.app import create_app
from bridge.destinations import load_runtime
from bridge.store.base import LeadIn, Outcome, QuarantineIn
from bridge.store.sqlite import SQLiteStore
from tests.conftest import make_lead
from tests.fuzz.conftest import count, fuzz

TOKEN = "admin-fuzz-token-0123456789"
T0 = 1_700_000_000.0


async def seed(url: str) -> None:
    """Leads the generated ids may hit: delivered, dead and pending ones."""
    store = SQLiteStore(url, synchronous="NORMAL")
    await store.open()
    try:
        leads = [LeadIn(i, json.dumps(make_lead(i))) for i in ("led_1", "led_2", "a", "0")]
        bad = [QuarantineIn("missing id", '{"data": {}}', None, 0)]
        await store.ingest(leads, ["archive"], bad, now=T0)
        claims = await store.claim(destination="archive", limit=10, lease_seconds=60, now=T0)
        await store.finish(
            [
                Outcome(c.delivery_id, c.lease_token, status, status, T0, 0.1, error="HTTP 400")
                for c, status in zip(claims, ("dead", "delivered"), strict=False)
            ]
        )
    finally:
        await store.close()


@pytest.fixture(scope="module")
def admin_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root: Path = tmp_path_factory.mktemp("admin-fuzz")
    url = f"sqlite:///{root / 'lb.db'}"
    asyncio.run(seed(url))
    config = {
        "storage": {"url": url, "synchronous": "NORMAL"},
        "admin": {"tokens": [TOKEN]},
        "worker": {"enabled": False},
        "retention": {"quarantine_days": None, "quarantine_max_rows": None},
        "destinations": [
            {"name": "archive", "type": "jsonl", "settings": {"path": str(root / "o.jsonl")}}
        ],
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    app = create_app(load_runtime(path, env={}), serve_metrics_port=False)
    schema = schemathesis.openapi.from_asgi("/admin/openapi.json", app.app)
    schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
    yield schema
    asgi.shutdown_lifespans()  # closes the store the app opened


def operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


def run_operation(operation: Any, headers: dict[str, str], *, authorized: bool) -> None:
    """Hypothesis over one operation: positive and negative examples, all checks.

    (schemathesis' own pytest plugin is not used: with pytest 9 its lazy
    fixture loader fails; the strategies and checks are the same.)"""
    label = f"admin API {operation.label} ({'token' if authorized else 'no token'})"
    strategy = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(
        GenerationMode.NEGATIVE
    )

    @fuzz(40)
    @given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        count(label)
        note(label)
        # A negative case may have mangled the Authorization header on purpose:
        # then it is sent as generated (and must be refused). Otherwise the
        # header is set (or removed) in the case itself, so schemathesis judges
        # the request that is actually sent.
        mangled = case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER)
        if not mangled:
            case.headers = dict(case.headers or {})
            case.headers.pop("Authorization", None)
            case.headers.update(headers)
        if (
            case.query
            and case.meta is not None
            and not case.meta.is_negative_at(ParameterLocation.QUERY)
        ):
            # An opaque cursor is valid only as the server issued it: a generated
            # one is rightly refused, so positive cases go without.
            case.query.pop("cursor", None)
        options: dict[str, Any] = {}
        if case.meta is not None and case.meta.is_negative_at(ParameterLocation.QUERY):
            # A query string has no types: a "negative" 1.2 for a string
            # parameter arrives as the valid string "1.2". The other checks stay.
            options["excluded_checks"] = [negative_data_rejection]
        response = case.call_and_validate(**options)
        if not authorized or mangled:
            # refused, or a path no route matches (a lead id holding a newline):
            # the router's own 404, which says nothing about any lead
            unrouted = response.status_code == 404 and b"no such endpoint" in response.content
            assert response.status_code == 401 or unrouted, response.status_code

    run()


def test_every_operation_with_the_token(admin_schema: Any) -> None:
    ops = operations(admin_schema)
    assert len(ops) >= 7
    for operation in ops:
        run_operation(operation, {"Authorization": f"Bearer {TOKEN}"}, authorized=True)


def test_every_operation_without_the_token(admin_schema: Any) -> None:
    for operation in operations(admin_schema):
        run_operation(operation, {}, authorized=False)
