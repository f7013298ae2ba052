"""The audit log: who (token name), what, when, for every state-changing
operator action (replay, erase, test send, ...) from the admin API, the CLI and
the console. Never personal data: targets are lead ids, destination names or a
description such as "by email"; details are counts and flags."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from bridge.store.base import Store

MAX_TEXT = 500


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: float
    actor: str  # "admin-token#1", "cli:alice", "console:admin-token#1", ...
    action: str  # "replay", "bulk_replay", "erase", "test_send", ...
    target: str | None
    detail: dict[str, Any]


def audit_statement(
    actor: str,
    action: str,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
    now: float | None = None,
) -> tuple[str, list[Any]]:
    """The INSERT of one audit row, to run in the same transaction as the action
    (``store.execute([action_statement, audit_statement(...)])``)."""
    text = json.dumps(detail or {}, sort_keys=True, default=str)[:MAX_TEXT]
    return (
        "INSERT INTO audit_log (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
        [time.time() if now is None else now, actor[:200], action[:100], target, text],
    )


async def record(
    store: Store,
    actor: str,
    action: str,
    target: str | None = None,
    detail: dict[str, Any] | None = None,
    now: float | None = None,
) -> None:
    """Write one audit entry. ``detail`` holds counts and flags only (no email,
    phone or payload); ``target`` a lead id, a destination or a description."""
    await store.execute([audit_statement(actor, action, target, detail, now)])


async def list_audit(
    store: Store, *, limit: int = 100, before_id: int | None = None, action: str | None = None
) -> list[AuditEntry]:
    """Newest first; ``before_id`` pages back from an entry."""
    conds, params = ["1 = 1"], []  # type: tuple[list[str], list[Any]]
    if before_id is not None:
        conds.append("id < ?")
        params.append(before_id)
    if action is not None:
        conds.append("action = ?")
        params.append(action)
    rows = await store.fetch(
        "SELECT id, at, actor, action, target, detail FROM audit_log "  # noqa: S608
        f"WHERE {' AND '.join(conds)} ORDER BY id DESC LIMIT ?",
        [*params, limit],
    )
    return [
        AuditEntry(int(i), at, actor, action, target, json.loads(detail or "{}"))
        for i, at, actor, action, target, detail in rows
    ]
