"""No admin API answer quotes its input: for every operation in the API's own
OpenAPI description, canary values in each documented parameter and body
field, an unknown parameter or body key named like a canary, and wrongly typed
fields; every 4xx answer is searched for the canary."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import AppHarness

TOKEN = "admin-token-for-echo-tests-77"
AUTH = {"authorization": f"Bearer {TOKEN}"}
CANARY = "zq9x.canary@leak.example"
CANARY_KEY = "zq9xcanarykey"


@pytest.fixture
async def admin(make_app: Callable[..., Any], tmp_path: Path) -> AppHarness:
    jsonl = {"path": str(tmp_path / "out.jsonl")}
    harness: AppHarness = await make_app(
        admin={"tokens": [TOKEN]},
        destinations=[{"name": "archive", "type": "jsonl", "settings": jsonl}],
    )
    return harness


def _resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _body_fields(spec: dict[str, Any], operation: dict[str, Any]) -> dict[str, Any]:
    content = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if not content:
        return {}
    schema = _resolve(spec, content["schema"])
    return {k: _resolve(spec, v) for k, v in schema.get("properties", {}).items()}


def _probes(spec: dict[str, Any], path: str, method: str, op: dict[str, Any]) -> list[Any]:
    """(path, query, json body) tuples that each carry the canary somewhere."""
    parameters = [_resolve(spec, p) for p in op.get("parameters", [])]
    concrete = path
    for p in parameters:
        if p["in"] == "path":
            concrete = concrete.replace("{" + p["name"] + "}", CANARY)
    probes: list[Any] = []
    query = [p["name"] for p in parameters if p["in"] == "query"]
    for name in query:
        probes.append((concrete, {name: CANARY}, None))
    probes.append((concrete, {CANARY_KEY: CANARY}, None))
    fields = _body_fields(spec, op)
    if method in ("post", "put", "patch"):
        for name, schema in fields.items():
            probes.append((concrete, {}, {name: CANARY}))  # a string where it may not be one
            if schema.get("type") == "string":
                probes.append((concrete, {}, {name: CANARY * 20}))  # too long, perhaps
        probes.append((concrete, {}, {CANARY_KEY: CANARY}))
        probes.append((concrete, {}, [CANARY]))
        probes.append((concrete, {}, CANARY))
    elif "{" in path:
        probes.append((concrete, {}, None))
    return probes


async def test_no_admin_answer_echoes_its_input(admin: AppHarness) -> None:
    spec = (await admin.client.get("/admin/openapi.json", headers=AUTH)).json()
    checked = 0
    refusals = 0
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for concrete, query, body in _probes(spec, path, method, operation):
                response = await admin.client.request(
                    method.upper(), concrete, params=query, json=body, headers=AUTH
                )
                checked += 1
                assert response.status_code < 500, (method, concrete, query, body)
                if response.status_code >= 400:
                    refusals += 1
                    text = response.text.lower()
                    assert CANARY not in text and CANARY_KEY not in text, (
                        method,
                        concrete,
                        query,
                        body,
                        response.text,
                    )
    # The sweep really exercised the API: every operation, most probes refused.
    assert checked >= 20 and refusals >= 10, (checked, refusals)
