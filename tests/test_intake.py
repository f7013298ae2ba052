"""The webhook endpoint: the seed's checklist, auth, limits, bad input, durability."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.app import create_app
from bridge.engine import Engine
from bridge.errors import StoreUnavailable
from bridge.leads import MAX_DEPTH
from bridge.store.sqlite import SQLiteStore
from tests.conftest import AppHarness, make_lead
from tests.waiting import eventually

SECRET = "s3cr3t-header-value"
AUTH = {"Authorization": SECRET}


def jsonl_dest(name: str = "file", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "jsonl", "settings": {"path": f"./{name}.jsonl"}, **extra}


@pytest.fixture
async def app(make_app: Callable[..., Any]) -> AppHarness:
    harness: AppHarness = await make_app(
        auth={"header_secrets": [SECRET]}, destinations=[jsonl_dest("a"), jsonl_dest("b")]
    )
    return harness


# --------------------------------------------------------------------------- seed checklist


async def test_one_lead_is_stored_with_one_delivery_per_destination(
    app: AppHarness, seed_lead: dict[str, Any]
) -> None:
    response = await app.post([seed_lead], headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": 0}
    assert await app.lead_ids() == [seed_lead["id"]]
    deliveries = await app.store.get_deliveries(seed_lead["id"])
    assert [(d.destination, d.status) for d in deliveries] == [("a", "pending"), ("b", "pending")]


async def test_several_leads_in_one_payload(app: AppHarness) -> None:
    leads = [make_lead(f"led_{i}") for i in range(5)]
    response = await app.post(leads, headers=AUTH)
    assert response.json() == {"accepted": 5, "duplicates": 0, "rejected": 0}
    assert await app.lead_ids() == [f"led_{i}" for i in range(5)]


async def test_empty_array_is_a_probe(app: AppHarness) -> None:
    response = await app.post([], headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {"accepted": 0, "duplicates": 0, "rejected": 0}
    assert await app.lead_ids() == []
    assert app.metrics.intake.probes == 1


async def test_new_keys_are_kept_verbatim(app: AppHarness, seed_lead: dict[str, Any]) -> None:
    seed_lead["campaign"] = {"utm_source": "newsletter", "score": 7.5}
    seed_lead["data"]["budget"] = 12000
    seed_lead["data"]["tags"] = ["a", None, True]
    await app.post([seed_lead], headers=AUTH)
    stored = await app.store.get_lead(seed_lead["id"])
    assert stored is not None and stored.payload is not None
    assert json.loads(stored.payload) == seed_lead
    assert stored.created == "2018-07-12T16:29:42Z"
    assert stored.url == seed_lead["url"]


async def test_retried_webhook_is_stored_once(app: AppHarness, seed_lead: dict[str, Any]) -> None:
    bodies = [await app.post([seed_lead], headers=AUTH) for _ in range(3)]
    assert [b.json() for b in bodies] == [
        {"accepted": 1, "duplicates": 0, "rejected": 0},
        {"accepted": 0, "duplicates": 1, "rejected": 0},
        {"accepted": 0, "duplicates": 1, "rejected": 0},
    ]
    assert len(await app.store.get_deliveries(seed_lead["id"])) == 2


async def test_duplicate_within_one_batch(app: AppHarness) -> None:
    response = await app.post([make_lead("x"), make_lead("x")], headers=AUTH)
    assert response.json() == {"accepted": 1, "duplicates": 1, "rejected": 0}


async def test_trailing_slash_is_accepted(app: AppHarness) -> None:
    response = await app.post([make_lead("slash")], path="/lead/webhook/", headers=AUTH)
    assert response.status_code == 200


# --------------------------------------------------------------------------- auth


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Authorization": SECRET}, 200),
        ({"Authorization": f"Bearer {SECRET}"}, 200),
        ({"Authorization": f"bearer  {SECRET} "}, 200),
        ({"Authorization": "wrong"}, 401),
        ({"Authorization": f"{SECRET}x"}, 401),
        ({}, 401),
    ],
)
async def test_header_secret(app: AppHarness, headers: dict[str, str], status: int) -> None:
    response = await app.post([make_lead("auth")], headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.json() == {
            "error": "unauthorized",
            "message": "missing or invalid Authorization header",
        }
        assert await app.lead_ids() == []
        assert await app.quarantine() == []
    else:
        assert await app.lead_ids() == ["auth"]


async def test_two_header_secrets_during_rotation(make_app: Callable[..., Any]) -> None:
    app: AppHarness = await make_app(auth={"header_secrets": ["old-secret", "new-secret"]})
    assert (
        await app.post([make_lead("1")], headers={"Authorization": "old-secret"})
    ).status_code == 200
    assert (
        await app.post([make_lead("2")], headers={"Authorization": "new-secret"})
    ).status_code == 200
    assert (await app.post([make_lead("3")], headers={"Authorization": "other"})).status_code == 401
    assert await app.lead_ids() == ["1", "2"]


async def test_path_secret(make_app: Callable[..., Any]) -> None:
    app: AppHarness = await make_app(auth={"path_secrets": ["abc123", "def456"]})
    ok = await app.post([make_lead("p1")], path="/lead/webhook/abc123")
    ok2 = await app.post([make_lead("p2")], path="/lead/webhook/def456/")
    wrong = await app.post([make_lead("p3")], path="/lead/webhook/nope")
    missing = await app.post([make_lead("p4")], path="/lead/webhook")
    assert (ok.status_code, ok2.status_code) == (200, 200)
    for response in (wrong, missing):
        assert response.status_code == 404
        assert response.json() == {"error": "not_found", "message": "no such endpoint"}
    assert await app.lead_ids() == ["p1", "p2"]


async def test_with_path_secrets_other_methods_do_not_reveal_the_route(
    make_app: Callable[..., Any],
) -> None:
    app: AppHarness = await make_app(auth={"path_secrets": ["abc123"]})
    for path in ("/lead/webhook", "/lead/webhook/abc123", "/lead/webhook/nope"):
        response = await app.client.get(path)
        assert response.status_code == 404, path
        assert response.json() == {"error": "not_found", "message": "no such endpoint"}


async def test_access_log_can_be_turned_off(
    make_app: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    app: AppHarness = await make_app(server={"behind_proxy": True, "access_log": False})
    with caplog.at_level("INFO", logger="lead_bridge.intake"):
        assert (await app.post([make_lead("quiet")])).status_code == 200
        assert (await app.post(b"nope")).status_code == 400
    assert "outcome=accepted" not in caplog.text
    assert "outcome=invalid_json" in caplog.text  # refusals are always logged


async def test_path_and_header_secrets_together(make_app: Callable[..., Any]) -> None:
    app: AppHarness = await make_app(auth={"path_secrets": ["p"], "header_secrets": ["h"]})
    assert (await app.post([make_lead("1")], path="/lead/webhook/p")).status_code == 401
    assert (
        await app.post([make_lead("2")], path="/lead/webhook/p", headers={"Authorization": "h"})
    ).status_code == 200
    assert (
        await app.post([make_lead("3")], path="/lead/webhook", headers={"Authorization": "h"})
    ).status_code == 404


async def test_without_path_secrets_an_extra_segment_is_404(app: AppHarness) -> None:
    response = await app.post([make_lead("x")], path="/lead/webhook/extra", headers=AUTH)
    assert response.status_code == 404


async def test_open_endpoint_warns_at_startup(
    make_runtime: Callable[..., Any], caplog: pytest.LogCaptureFixture, tmp_path: Any
) -> None:
    runtime = make_runtime()
    store = SQLiteStore(runtime.config.storage.url)
    app = create_app(runtime, store=store, start_workers=False)
    await store.open()
    try:
        with caplog.at_level("WARNING"):
            async with app.router.lifespan_context(app):
                pass
    finally:
        await store.close()
    assert "the webhook endpoint is open" in caplog.text


# --------------------------------------------------------------------------- limits and bad input


async def test_body_over_limit_is_413(make_app: Callable[..., Any]) -> None:
    app: AppHarness = await make_app(server={"behind_proxy": True, "max_body_bytes": 2048})
    big = [make_lead("big", interested_in="x" * 4096)]
    response = await app.post(big)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert "2048 bytes" in response.json()["message"]
    assert await app.lead_ids() == []


async def test_chunked_body_over_limit_stops_reading(make_app: Callable[..., Any]) -> None:
    app: AppHarness = await make_app(server={"behind_proxy": True, "max_body_bytes": 2048})
    sent: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            sent.append(1)
            yield b" " * 1024

    response = await app.client.post("/lead/webhook", content=chunks())
    assert response.status_code == 413
    assert await app.lead_ids() == []


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (b"{not json", "invalid_json", "the body is not valid JSON: Expecting property name"),
        (b"", "invalid_json", "the body is not valid JSON: Expecting value at line 1, column 1"),
        (b"\xff\xfe", "invalid_encoding", "the body must be JSON encoded as UTF-8"),
        (
            b'{"id": "x"}',
            "not_an_array",
            "the body must be a JSON array of lead objects, got an object",
        ),
        (b'"hello"', "not_an_array", "the body must be a JSON array of lead objects, got a string"),
        (
            b"[" + b'{"id": "deep", "data": ' + b'{"a": ' * 40 + b"1" + b"}" * 41 + b"]",
            "too_deep",
            f"the JSON nests deeper than {MAX_DEPTH} levels",
        ),
        (b"[" * 5000 + b"]" * 5000, "too_deep", f"the JSON nests deeper than {MAX_DEPTH} levels"),
    ],
)
async def test_malformed_bodies_are_400_and_quarantined(
    app: AppHarness, body: bytes, code: str, message: str
) -> None:
    response = await app.post(body, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"] == code
    assert response.json()["message"].startswith(message)
    assert await app.lead_ids() == []
    [item] = await app.quarantine()
    assert item["reason"].startswith(code)
    assert item["raw"] == body.decode("utf-8", "backslashreplace")


async def test_nesting_at_the_limit_is_accepted(app: AppHarness) -> None:
    # array (1) > lead (2) > data (3) > ... up to exactly MAX_DEPTH
    nested: Any = "leaf"
    for _ in range(MAX_DEPTH - 3):
        nested = {"n": nested}
    lead = make_lead("edge", nested=nested)
    assert (await app.post([lead], headers=AUTH)).status_code == 200


async def test_invalid_elements_are_quarantined_one_by_one(app: AppHarness) -> None:
    body = [
        make_lead("good-1"),
        "a string",
        {"url": "no id"},
        {"id": ""},
        {"id": 42},
        {"id": "x" * 256},
        {"id": "bad-data", "data": ["not", "an", "object"]},
        make_lead("good-2"),
        {"id": "nul\x00id"},
    ]
    response = await app.post(body, headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {"accepted": 2, "duplicates": 0, "rejected": 7}
    assert await app.lead_ids() == ["good-1", "good-2"]
    reasons = sorted(q["reason"] for q in await app.quarantine())
    assert reasons == [
        "element 1: expected an object, got a string",
        "element 2: missing 'id'",
        "element 3: 'id' must be a non-empty string, got a string",
        "element 4: 'id' must be a non-empty string, got a number",
        "element 5: 'id' is longer than 255 characters",
        "element 6: 'data' must be an object, got an array",
        "element 8: 'id' contains control or invalid characters",
    ]
    bad = next(q for q in await app.quarantine() if q["item_index"] == 6)
    assert bad["lead_id"] == "bad-data"
    assert json.loads(bad["raw"]) == {"id": "bad-data", "data": ["not", "an", "object"]}


async def test_non_string_values_are_kept(app: AppHarness) -> None:
    lead = {
        "id": "typed",
        "created": 1531412982,
        "url": None,
        "data": {"n": 1, "f": 1.5, "b": False},
    }
    assert (await app.post([lead], headers=AUTH)).status_code == 200
    stored = await app.store.get_lead("typed")
    assert stored is not None and stored.payload is not None
    assert json.loads(stored.payload) == lead
    assert stored.created is None  # not a string: kept only in the payload


async def test_error_bodies_never_echo_the_input(app: AppHarness) -> None:
    response = await app.post(b'{"email": "canary@example.com"', headers=AUTH)
    assert response.status_code == 400
    assert "canary" not in response.text


# --------------------------------------------------------------------------- durability


class FailingStore(SQLiteStore):
    async def ingest(self, *args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("disk on fire")

    async def ingest_body(self, *args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("disk on fire")


async def test_commit_failure_answers_503(make_runtime: Callable[..., Any]) -> None:
    runtime = make_runtime()
    store = FailingStore(runtime.config.storage.url)
    await store.open()
    app = create_app(runtime, store=store, start_workers=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://t") as c:
        response = await c.post("/lead/webhook", json=[make_lead("x")])
        bad = await c.post("/lead/webhook", content=b"nope")
    await store.close()
    assert response.status_code == 503
    assert response.json() == {
        "error": "unavailable",
        "message": "the leads could not be stored; retry later",
    }
    assert bad.status_code == 503


async def test_without_destinations_leads_are_stored_and_reported_undelivered(
    make_app: Callable[..., Any],
) -> None:
    app: AppHarness = await make_app()
    await app.post([make_lead("lonely")])
    status = await app.store.status(0)
    assert status.leads == 1 and status.undelivered == 1


async def test_disabled_destination_gets_no_deliveries(make_app: Callable[..., Any]) -> None:
    app: AppHarness = await make_app(
        destinations=[jsonl_dest("on"), jsonl_dest("off", enabled=False)]
    )
    await app.post([make_lead("l1")])
    assert [d.destination for d in await app.store.get_deliveries("l1")] == ["on"]


# --------------------------------------------------------------------------- probes


async def test_health_and_readiness(app: AppHarness) -> None:
    assert (await app.client.get("/healthz")).json() == {"status": "ok"}
    assert (await app.client.get("/readyz")).json() == {"status": "ready"}
    await app.store.close()
    ready = await app.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "store": "unreachable"}


async def test_readiness_names_destinations_whose_worker_is_down(
    make_app: Callable[..., Any], tmp_path: Path
) -> None:
    # Issue 12 item 6: a crashed delivery loop is visible, not silent.
    app: AppHarness = await make_app(
        destinations=[
            {"name": name, "type": "jsonl", "settings": {"path": str(tmp_path / name)}}
            for name in ("a", "b")
        ]
    )

    async def broken_claim(**kw: Any) -> Any:
        raise OSError(24, "Too many open files")

    app.store.claim = broken_claim  # type: ignore[method-assign]
    state = app.client._transport.app.state.lb  # type: ignore[attr-defined]
    engine = Engine(
        app.store, app.runtime.active, app.metrics, app.runtime.config.worker, restart_backoff=60
    )
    state.engine = engine
    await engine.start()
    try:
        assert engine.workers_down() == []  # starting loops are not down (no crash yet)
        await eventually(lambda: engine.workers_down() == ["a", "b"], "both loops down")
        answers: list[httpx.Response] = []

        async def readyz_names_workers() -> bool:
            # readyz first pings the store (5 s bound): on a loaded machine a slow
            # ping answers "store unreachable" once; a probe asks again, so does this.
            answers.append(await app.client.get("/readyz"))
            return "workers_down" in answers[-1].json()

        await eventually(readyz_names_workers, "readyz to name the loops that are down")
        ready = answers[-1]
        assert ready.status_code == 503
        assert ready.json() == {"status": "unavailable", "workers_down": ["a", "b"]}
    finally:
        await engine.stop(1)
        state.engine = None


async def test_get_on_the_webhook_is_405(app: AppHarness) -> None:
    response = await app.client.get("/lead/webhook")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


async def test_numbers_are_kept_exactly_as_sent(app: AppHarness) -> None:
    # The fast parser would turn integers beyond 64 bits into floats; NaN and
    # huge exponents are not JSON but Python's parser accepts them: kept too.
    body = (
        b'[{"id": "n1", "data": {"big": 123456789012345678901234567890, '
        b'"neg": -9223372036854775809, "max": 18446744073709551615, "f": 0.1, "e": 1.5e-7}},'
        b' {"id": "n2", "data": {"nan": NaN, "huge": 1e400}}]'
    )
    response = await app.post(body, headers=AUTH)
    assert response.json() == {"accepted": 2, "duplicates": 0, "rejected": 0}
    stored = await app.store.get_lead("n1")
    assert stored is not None and stored.payload is not None
    assert json.loads(stored.payload)["data"] == {
        "big": 123456789012345678901234567890,
        "neg": -9223372036854775809,
        "max": 18446744073709551615,
        "f": 0.1,
        "e": 1.5e-7,
    }
    assert '"big":123456789012345678901234567890' in stored.payload
    other = await app.store.get_lead("n2")
    assert other is not None and other.payload is not None
    assert other.payload == '{"id":"n2","data":{"nan":NaN,"huge":Infinity}}'


async def test_lone_surrogate_escapes_do_not_fail_the_batch(app: AppHarness) -> None:
    # JSON allows "\ud800" (a lone surrogate) but no destination can encode it: such
    # elements are quarantined with the reason (escape kept), nothing answered 503.
    body = (
        b'[{"id": "good", "data": {}}, {"id": "odd", "url": "\\ud800", "data": {"x": "\\udfff"}},'
        b' {"id": "bad\\ud800"}]'
    )
    response = await app.post(body, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": 2}
    assert await app.store.get_lead("odd") is None
    odd, bad = sorted(await app.quarantine(), key=lambda q: q["reason"])
    assert odd["reason"].startswith("element 1: ") and "lone surrogate" in odd["reason"]
    assert json.loads(odd["raw"]) == {"id": "odd", "url": "\ud800", "data": {"x": "\udfff"}}
    assert bad["reason"] == "element 2: 'id' contains control or invalid characters"


# --------------------------------------------------------------------------- content types


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        'Application/JSON;charset="UTF-8"',
        "application/vnd.leads+json",
        None,  # no header: the body decides
    ],
)
async def test_json_media_types_are_accepted(app: AppHarness, content_type: str | None) -> None:
    headers = dict(AUTH)
    if content_type is not None:
        headers["content-type"] = content_type
    body = json.dumps([make_lead("led_ct")]).encode()
    response = await app.client.post("/lead/webhook", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert await app.lead_ids() == ["led_ct"]


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "text/json",
        "application/json; charset=utf-16",
        "application/jsonp",
    ],
)
async def test_other_media_types_are_415_before_reading(app: AppHarness, content_type: str) -> None:
    body = json.dumps([make_lead("led_ct")]).encode()
    headers = {**AUTH, "content-type": content_type}
    response = await app.client.post("/lead/webhook", content=body, headers=headers)
    assert response.status_code == 415
    assert response.json()["error"] == "unsupported_media_type"
    assert content_type.split(";")[0] not in response.text  # the header is not echoed
    assert await app.lead_ids() == []
    assert await app.quarantine() == []


async def test_a_wrong_secret_is_401_before_the_media_type(app: AppHarness) -> None:
    response = await app.client.post(
        "/lead/webhook", content=b"x", headers={"content-type": "text/plain"}
    )
    assert response.status_code == 401


async def test_a_utf8_byte_order_mark_is_ignored(app: AppHarness) -> None:
    body = b"\xef\xbb\xbf" + json.dumps([make_lead("led_bom")]).encode()
    response = await app.post(body, headers=AUTH)
    assert response.status_code == 200
    assert await app.lead_ids() == ["led_bom"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-be"])
async def test_utf16_and_utf32_bodies_are_refused_and_quarantined(
    app: AppHarness, encoding: str
) -> None:
    body = json.dumps([make_lead("led_wide")]).encode(encoding)
    response = await app.post(body, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_encoding"
    assert "UTF-8" in response.json()["message"]
    assert await app.lead_ids() == []
    [item] = await app.quarantine()
    assert item["reason"].startswith("invalid_encoding")
