"""The webhook endpoint over generated requests (bodies, headers, methods,
paths): never a 5xx, never an answer that echoes what was sent, and never a
200 that stored a lead the delivery engine could not deliver (each stored
lead goes through every destination's mapping and its connector's JSON
encoding, as the engine would)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml
from hypothesis import given, note
from hypothesis import strategies as st

from bridge.app import create_app
from bridge.destinations import Runtime, load_runtime
from bridge.errors import MappingError
from bridge.store.sqlite import SQLiteStore
from connectors.webhook import _encode
from tests.fuzz.conftest import count, fuzz

SECRET = "fuzz-webhook-secret-1"
PATH = "/lead/webhook"
T = TypeVar("T")


class Service:
    """The app on a real SQLite store, on its own event loop in a thread, so
    synchronous hypothesis tests can drive it request by request."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.store = SQLiteStore(runtime.config.storage.url, synchronous="NORMAL")
        self.run(self.store.open())
        app = create_app(runtime, store=self.store, start_workers=False)
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="https://test"
        )

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    def close(self) -> None:
        self.run(self.client.aclose())
        self.run(self.store.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root: Path = tmp_path_factory.mktemp("webhook-fuzz")
    config = {
        "server": {"path": PATH},
        "auth": {"header_secrets": [SECRET]},
        "storage": {"url": f"sqlite:///{root / 'lb.db'}", "synchronous": "NORMAL"},
        "worker": {"enabled": False},
        "destinations": [
            {"name": "archive", "type": "jsonl", "settings": {"path": str(root / "out.jsonl")}},
            {"name": "hook", "type": "webhook", "settings": {"url": "https://hooks.example/x"}},
        ],
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    svc = Service(load_runtime(path, env={}))
    yield svc
    svc.close()


# ------------------------------------------------------------------ strategies

canaries = st.text("0123456789abcdef", min_size=10, max_size=10).map(lambda h: f"cnry{h}")
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**80), 2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
lead_ids = st.sampled_from(["led_1", "led_2", "led_1", "led_\u00e9", " "]) | st.text(max_size=20)


@st.composite
def lead(draw: st.DrawFn, canary: str) -> Any:
    data = draw(st.dictionaries(st.text(max_size=10), json_values, max_size=5))
    data[draw(st.sampled_from(["email", "notes", canary]))] = draw(
        st.sampled_from([f"{canary}@example.com", canary, f"+1555{canary}"])
    )
    element: dict[str, Any] = {"id": draw(lead_ids | st.just(f"led_{canary}")), "data": data}
    for key in draw(
        st.lists(st.sampled_from(["url", "created", "extra", "data", "id"]), max_size=2)
    ):
        element[key] = draw(json_values)
    return element if draw(st.integers(0, 9)) else draw(json_values)


@st.composite
def body(draw: st.DrawFn, canary: str) -> bytes:
    kind = draw(st.sampled_from(["leads"] * 8 + ["json", "bytes", "deep", "text"]))
    if kind == "leads":
        value: Any = draw(st.lists(lead(canary), max_size=4))
    elif kind == "json":
        value = draw(json_values)
    elif kind == "deep":
        depth = draw(st.integers(30, 40))
        value = [canary]
        for _ in range(depth):
            value = [value]
    elif kind == "bytes":
        return draw(st.binary(max_size=64)) + canary.encode()
    else:
        return draw(st.text(max_size=40)).encode("utf-8", "surrogatepass") + canary.encode()
    text = json.dumps(value, ensure_ascii=draw(st.booleans()))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1"]))
    return text.encode(encoding, "surrogatepass" if encoding == "utf-8" else "replace")


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    canary = draw(canaries)
    headers: dict[str, str] = {}
    # Mostly well-formed requests, so that many reach the store; the rest vary one thing.
    auth = draw(st.sampled_from([SECRET] * 5 + [f"Bearer {SECRET}", "wrong", canary, None]))
    if auth is not None:
        headers["authorization"] = auth
    content_type = draw(
        st.sampled_from(
            [
                "application/json",
                "application/json",
                "application/json",
                "application/json",
                "application/json; charset=utf-8",
                "application/vnd.provider+json",
                "application/json; charset=utf-16",
                "text/plain",
                f"application/{canary}",
                None,
            ]
        )
    )
    if content_type is not None:
        headers["content-type"] = content_type
    if draw(st.booleans()):
        headers[draw(st.sampled_from(["x-request-id", "user-agent", "x-forwarded-for"]))] = canary
    method = draw(st.sampled_from(["POST"] * 15 + ["GET", "PUT", "DELETE", "PATCH", "HEAD"]))
    path = draw(
        st.sampled_from([PATH] * 8 + [f"{PATH}/", f"{PATH}/{canary}", f"/{canary}", "/admin/x"])
    )
    return {
        "canary": canary,
        "method": method,
        "path": path,
        "headers": headers,
        "content": draw(body(canary)),
    }


# ------------------------------------------------------------------ the property


def deliverable(service: Service, lead_id: str) -> None:
    """The stored lead as the engine would take it: JSON, one pending delivery
    per destination, mapped (or refused by a classified MappingError) and
    encoded by the connectors' own encoders."""
    record = service.run(service.store.get_lead(lead_id))
    assert record is not None and record.payload is not None
    stored = json.loads(record.payload)
    assert isinstance(stored, dict) and stored["id"] == lead_id
    deliveries = service.run(service.store.get_deliveries(lead_id))
    assert sorted(d.destination for d in deliveries) == ["archive", "hook"]
    for dest in service.runtime.active:
        try:
            mapped = dest.mapping.apply(stored).record
        except MappingError:
            continue  # a dead letter with its reason: handled, visible, replayable
        _encode(mapped)  # the webhook connector's encoding
        envelope = {"lead_id": lead_id, "destination": dest.name, "record": mapped}
        json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()  # jsonl's


@fuzz(300)
@given(request=requests())
def test_webhook_requests(service: Service, request: dict[str, Any]) -> None:
    count("webhook requests")
    canary = request.pop("canary")
    note(repr(request))
    response = service.run(
        service.client.request(
            request["method"],
            request["path"],
            headers=request["headers"],
            content=request["content"],
        )
    )

    count(f"webhook: answered {response.status_code}")
    assert response.status_code < 500, response.text
    answer = response.text + " ".join(f"{k}: {v}" for k, v in response.headers.items())
    assert canary not in answer.lower(), f"the answer echoes the request: {answer!r}"
    if response.status_code != 200 or request["path"] not in (PATH, f"{PATH}/"):
        return
    assert request["method"] == "POST"
    counts = response.json()
    if not counts.get("accepted") and not counts.get("duplicates"):
        return
    elements = json.loads(request["content"].decode("utf-8-sig"))
    stored = {e["id"] for e in elements if isinstance(e, dict) and isinstance(e.get("id"), str)}
    for lead_id in stored:
        if service.run(service.store.get_lead(lead_id)) is not None:
            count("webhook: stored leads mapped and encoded")
            deliverable(service, lead_id)
