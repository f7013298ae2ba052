"""Outcomes go to the store in batches: one ``finish`` call per commit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from bridge.store.base import Outcome, Store


class Finisher:
    """Hands outcomes to the store in batches: one ``finish`` call per commit.

    While one call is being committed, the outcomes that arrive meanwhile wait
    and go together in the next one (group commit, as the store does for its
    writes), so the store applies them with a few set-based statements instead
    of two per delivery. Each caller still learns only after the commit whether
    its outcome was applied: nothing counts as delivered before that.
    """

    def __init__(self, store: Store, observe: Callable[[float], None]) -> None:
        self.store = store
        self.observe = observe  # the commit round trip, a congestion signal
        self._pending: list[tuple[Outcome, asyncio.Future[bool]]] = []
        self._busy = False

    async def finish(self, outcome: Outcome) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((outcome, future))
        if not self._busy:
            self._busy = True
            asyncio.get_running_loop().call_soon(self._next)
        try:
            # Shielded: a cancelled delivery must not cancel its neighbours' commit.
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(_consume)  # nobody will read its result now
            raise

    def _next(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            self._busy = False
            return
        task = asyncio.create_task(self._commit(batch))
        task.add_done_callback(lambda _: self._next())

    async def _commit(self, batch: list[tuple[Outcome, asyncio.Future[bool]]]) -> None:
        start = time.perf_counter()
        try:
            applied = await self.store.finish([outcome for outcome, _ in batch])
            self.observe(time.perf_counter() - start)
        except Exception as exc:  # StoreError, or a bug: every caller hears of it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), ok in zip(batch, applied, strict=True):
            if not future.done():
                future.set_result(ok)


def _consume(future: asyncio.Future[bool]) -> None:
    if not future.cancelled():
        future.exception()
