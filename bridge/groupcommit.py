"""Group commit: many concurrent callers, one write for all of them.

The one home of "batch while busy" in Lead Bridge: wherever concurrent writes
can share a commit (an fsync, a round trip, a statement) — the PostgreSQL intake
writer, the delivery engine's outcomes, the JSON-lines connector's fsync — the
site supplies only its ``flush`` and this class does the rest:

- a caller ``submit``\\s an item and awaits its own answer;
- while a flush runs, new items wait; the next flush takes what has waited,
  up to ``max_items`` and ``max_bytes`` (at least one item, however large);
- ``flush`` returns one outcome per item, in order: a result, or an exception
  instance for an item that failed on its own; if ``flush`` raises, every item
  of that batch gets that exception. Each item is answered exactly once;
- a caller that is cancelled stops waiting, but its item is still written (it
  may already be on its way) and its answer is dropped;
- at most ``max_pending`` items wait (not counting the batch being flushed);
  beyond that ``submit`` waits for room, or with ``wait_when_full=False``
  raises ``refuse(message)`` at once;
- ``close`` refuses new items (``refuse(message)``, also to callers still
  waiting for room), flushes those already accepted and returns once they are
  answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

Flush = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]


class GroupCommit(Generic[T, R]):
    """Batches items submitted on one event loop into calls of ``flush``."""

    def __init__(
        self,
        flush: Flush[T, R],
        *,
        refuse: Callable[[str], Exception],
        name: str = "group commit",
        max_items: int | None = None,
        max_bytes: int | None = None,
        size: Callable[[T], int] | None = None,
        max_pending: int | None = None,
        wait_when_full: bool = True,
    ) -> None:
        for key, value in (("max_items", max_items), ("max_pending", max_pending)):
            if value is not None and value < 1:
                raise ValueError(f"{name}: {key} must be at least 1, not {value}")
        if max_bytes is not None and size is None:
            raise ValueError(f"{name}: max_bytes needs size, the bytes of one item")
        self.flush = flush
        self.refuse = refuse
        self.name = name
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.size = size
        self.max_pending = max_pending
        self.wait_when_full = wait_when_full
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._room: list[asyncio.Future[None]] = []  # submitters waiting for room
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        """Items accepted and not yet taken by a flush."""
        return len(self._pending)

    @property
    def busy(self) -> bool:
        """A flush is running or items wait for one."""
        return self._flusher is not None

    @property
    def closed(self) -> bool:
        return self._closed

    async def submit(self, item: T) -> R:
        """Queue ``item``; its answer once the flush that carries it is done."""
        if self._closed:
            raise self.refuse(f"{self.name} is closed")
        if self.max_pending is not None and len(self._pending) >= self.max_pending:
            if not self.wait_when_full:
                raise self.refuse(f"{self.name} is full ({self.max_pending} items waiting)")
            await self._wait_for_room(self.max_pending)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if self._flusher is None:
            self._flusher = loop.create_task(self._run(), name=self.name)
        try:
            return await future
        except asyncio.CancelledError:
            # Cancelling the caller cancels the future (the flush then skips it), or
            # came after its answer: consume that, so no error goes unretrieved.
            if future.done() and not future.cancelled():
                future.exception()
            raise

    async def _wait_for_room(self, limit: int) -> None:
        loop = asyncio.get_running_loop()
        while len(self._pending) >= limit:
            waiter: asyncio.Future[None] = loop.create_future()
            self._room.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._room:
                    self._room.remove(waiter)
            if self._closed:
                raise self.refuse(f"{self.name} is closed")

    def _wake_waiters(self) -> None:
        waiters, self._room = self._room, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        pending = self._pending
        count = len(pending) if self.max_items is None else min(self.max_items, len(pending))
        if self.max_bytes is not None and self.size is not None:
            size = self.size
            total = size(pending[0][0])
            taken = 1
            while taken < count and total + (more := size(pending[taken][0])) <= self.max_bytes:
                total += more
                taken += 1
            count = taken
        batch = pending[:count]
        del pending[:count]
        self._wake_waiters()
        return batch

    async def _run(self) -> None:
        try:
            while self._pending:
                await self._commit(self._take())
        finally:
            self._flusher = None

    async def _commit(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            outcomes = await self.flush([item for item, _ in batch])
            if len(outcomes) != len(batch):  # a bug in the flush: nobody may wait forever
                raise RuntimeError(f"{self.name}: {len(outcomes)} outcomes for {len(batch)} items")
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException as exc:
            # The flusher itself was cancelled (the loop is shutting down): the items
            # it carried and those waiting behind it fail rather than wait forever.
            error = self.refuse(f"{self.name} was interrupted ({type(exc).__name__})")
            rest, self._pending = self._pending, []
            for _, future in batch + rest:
                if not future.done():
                    future.set_exception(error)
            raise
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def close(self) -> None:
        """Refuse new items; return once every accepted item is answered."""
        self._closed = True
        self._wake_waiters()
        if self._flusher is not None:
            # wait() neither raises the flusher's exception nor cancels it with us.
            await asyncio.wait([self._flusher])
