"""Outcomes go to the store in batches: one ``finish`` call per commit.

While one call is being committed, the outcomes that arrive meanwhile wait and
go together in the next one (:class:`bridge.groupcommit.GroupCommit`), so the
store applies them with a few set-based statements instead of two per delivery.
Each caller still learns only after the commit whether its outcome was applied
(its lease still held): nothing counts as delivered before that.
"""

from __future__ import annotations

from bridge.errors import StoreUnavailable
from bridge.groupcommit import GroupCommit
from bridge.store.base import Outcome, Store

Finisher = GroupCommit[Outcome, bool]


def outcome_finisher(store: Store) -> Finisher:
    return GroupCommit(store.finish, refuse=StoreUnavailable, name="delivery outcomes")
