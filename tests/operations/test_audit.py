"""The audit log on both backends: written in the action's transaction, newest first."""

from __future__ import annotations

import pytest

from bridge.errors import StoreError
from bridge.operations.audit import audit_statement, list_audit, record
from bridge.store.base import Store


async def test_record_and_list(store: Store) -> None:
    await record(store, "admin-token#1", "replay", "led_1", {"requeued": 2}, now=10.0)
    await record(store, "cli:alice", "erase", "by email", {"leads": 1}, now=11.0)
    entries = await list_audit(store)
    assert [(e.actor, e.action, e.target, e.detail) for e in entries] == [
        ("cli:alice", "erase", "by email", {"leads": 1}),
        ("admin-token#1", "replay", "led_1", {"requeued": 2}),
    ]
    assert [e.action for e in await list_audit(store, before_id=entries[0].id)] == ["replay"]
    assert [e.at for e in await list_audit(store, action="erase")] == [11.0]


async def test_audit_row_shares_the_action_transaction(store: Store) -> None:
    # a failing statement after the audit row rolls the audit row back too
    with pytest.raises(StoreError):
        await store.execute(
            [audit_statement("x", "bulk_replay"), ("UPDATE no_such_table SET a = 1", [])]
        )
    assert await list_audit(store) == []
