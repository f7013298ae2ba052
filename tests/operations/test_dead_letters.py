"""Dead letters: filter by destination, error class and time; the preview counts
exactly what the bulk replay then requeues; audited; on both backends."""

from __future__ import annotations

import pytest

from bridge.operations.audit import list_audit
from bridge.operations.dead_letters import (
    DeadLetterQuery,
    list_dead_letters,
    preview_replay,
    replay_dead_letters,
)
from bridge.operations.search import BadQuery
from bridge.store.base import Store
from tests.operations.helpers import T0, add_leads, finish_all, lead


async def seed(store: Store) -> None:
    await add_leads(store, [lead(f"led_{i}") for i in range(6)], ["crm", "chat"])
    await finish_all(
        store,
        "crm",
        status="dead",
        only=["led_0", "led_1"],
        status_code=400,
        error="HTTP 400: FIELD_INTEGRITY_EXCEPTION for j.doe@example.com",
        now=T0 + 10,
    )
    await finish_all(
        store,
        "crm",
        status="dead",
        only=["led_2"],
        error="check the credentials of destination crm: HTTP 401",
        status_code=401,
        now=T0 + 20,
    )
    await finish_all(
        store,
        "chat",
        status="dead",
        only=["led_3"],
        error="gave up after 6 attempts; last error: Slack request timed out",
        now=T0 + 30,
    )
    await finish_all(store, "crm", now=T0 + 40)  # the rest delivered


async def test_filter_classify_and_mask(store: Store) -> None:
    await seed(store)
    page = await list_dead_letters(store, DeadLetterQuery())
    assert page.total == 4
    assert [(d.delivery.lead_id, d.error_class) for d in page.items] == [
        ("led_3", "timeout"),
        ("led_2", "auth"),
        ("led_1", "http_4xx"),
        ("led_0", "http_4xx"),
    ]
    assert "j***@example.com" in (page.items[2].error or "")
    crm_4xx = await list_dead_letters(store, DeadLetterQuery("crm", "http_4xx"))
    assert [d.delivery.lead_id for d in crm_4xx.items] == ["led_1", "led_0"]
    recent = await list_dead_letters(store, DeadLetterQuery(since=T0 + 15, until=T0 + 25))
    assert [d.delivery.lead_id for d in recent.items] == ["led_2"]
    first = await list_dead_letters(store, DeadLetterQuery(), limit=3)
    rest = await list_dead_letters(store, DeadLetterQuery(), limit=3, cursor=first.next_cursor)
    assert [d.delivery.lead_id for d in rest.items] == ["led_0"] and rest.next_cursor is None
    with pytest.raises(BadQuery, match="error_class"):
        await list_dead_letters(store, DeadLetterQuery(error_class="bad"))


async def test_preview_then_bulk_replay_all_matching(store: Store) -> None:
    await seed(store)
    preview = await preview_replay(store, DeadLetterQuery(destination="crm"))
    assert preview.count == 3 and preview.by_destination == {"crm": 3}
    requeued = await replay_dead_letters(
        store, DeadLetterQuery(destination="crm"), actor="admin-token#1", as_of=preview.as_of
    )
    assert requeued == preview.count
    assert (await list_dead_letters(store, DeadLetterQuery("crm"))).total == 0
    claims = await store.claim(destination="crm", limit=10, lease_seconds=60, now=T0 + 1e9)
    assert sorted(c.lead_id for c in claims) == ["led_0", "led_1", "led_2"]
    assert all(c.attempts == 1 for c in claims)  # attempts kept
    (entry,) = await list_audit(store)
    assert (entry.actor, entry.action, entry.target) == ("admin-token#1", "bulk_replay", "crm")
    assert entry.detail["requeued"] == 3 and entry.detail["selected"] == "all matching"


async def test_selected_ids_only_and_as_of_leaves_later_dead_letters(store: Store) -> None:
    await seed(store)
    page = await list_dead_letters(store, DeadLetterQuery())
    chosen = [page.items[0].delivery.id, page.items[1].delivery.id]
    preview = await preview_replay(store, DeadLetterQuery(), ids=chosen)
    assert preview.count == 2
    assert await replay_dead_letters(store, DeadLetterQuery(), actor="x", ids=chosen) == 2
    # a preview taken before a delivery died does not replay it
    early = await preview_replay(store, DeadLetterQuery(destination="crm"))
    await add_leads(store, [lead("led_late")], ["crm"], now=T0 + 50)
    await finish_all(
        store,
        "crm",
        status="dead",
        error="HTTP 400",
        status_code=400,
        only=["led_late"],
        now=early.as_of + 100,
    )
    assert (
        await replay_dead_letters(
            store, DeadLetterQuery(destination="crm"), actor="x", as_of=early.as_of
        )
        == early.count
        == 2
    )
    left = await list_dead_letters(store, DeadLetterQuery())
    assert [d.delivery.lead_id for d in left.items] == ["led_late"]


async def test_bulk_replay_reports_progress_per_chunk(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.operations import dead_letters

    await seed(store)
    monkeypatch.setattr(dead_letters, "REPLAY_CHUNK", 2)
    steps: list[int] = []
    requeued = await replay_dead_letters(store, DeadLetterQuery(), actor="t", progress=steps.append)
    assert requeued == 4 and steps == [2, 2, 0]
