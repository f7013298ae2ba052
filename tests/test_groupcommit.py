from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import StoreUnavailable
from bridge.groupcommit import GroupCommit
from tests.waiting import eventually

Outcomes = Sequence[str | BaseException]


class Flushes:
    """A flush the test answers by hand: each call waits for the test's answer."""

    def __init__(self) -> None:
        self.calls: asyncio.Queue[tuple[list[str], asyncio.Future[Outcomes]]] = asyncio.Queue()
        self.batches: list[list[str]] = []

    async def __call__(self, items: list[str]) -> Outcomes:
        self.batches.append(items)
        answer: asyncio.Future[Outcomes] = asyncio.get_running_loop().create_future()
        await self.calls.put((items, answer))
        return await answer

    async def next(self) -> tuple[list[str], asyncio.Future[Outcomes]]:
        return await asyncio.wait_for(self.calls.get(), 60)


def upper(items: list[str]) -> Outcomes:
    return [item.upper() for item in items]


def make(flush: Flushes, **options: Any) -> GroupCommit[str, str]:
    return GroupCommit(flush, refuse=StoreUnavailable, name="test writer", **options)


def submit(group: GroupCommit[str, str], *items: str) -> list[asyncio.Task[str]]:
    return [asyncio.create_task(group.submit(item)) for item in items]


async def test_each_caller_gets_its_own_result() -> None:
    flush = Flushes()
    group = make(flush)
    tasks = submit(group, "a", "b")
    items, answer = await flush.next()
    assert items == ["a", "b"]  # submitted in one turn of the loop: one flush
    answer.set_result(upper(items))
    assert await asyncio.gather(*tasks) == ["A", "B"]
    assert not group.busy


async def test_items_submitted_during_a_flush_go_together_in_the_next() -> None:
    flush = Flushes()
    group = make(flush)
    first = submit(group, "a")
    items, answer = await flush.next()
    assert items == ["a"]
    later = submit(group, "b", "c", "d")
    await eventually(lambda: group.pending == 3, "three items waiting")
    assert group.busy
    answer.set_result(upper(items))
    items, answer = await flush.next()
    assert items == ["b", "c", "d"]
    answer.set_result(upper(items))
    assert await asyncio.gather(*first, *later) == ["A", "B", "C", "D"]


@pytest.mark.parametrize(
    ("options", "items", "batches"),
    [
        ({"max_items": 2}, "a b c d e", [["a", "b"], ["c", "d"], ["e"]]),
        # a byte bound still takes one item, however large
        (
            {"max_bytes": 4, "size": len},
            "aa bb c toolarge d",
            [["aa", "bb"], ["c"], ["toolarge"], ["d"]],
        ),
        (
            {"max_items": 2, "max_bytes": 4, "size": len},
            "a b c dddd e",
            [["a", "b"], ["c"], ["dddd"], ["e"]],
        ),
    ],
)
async def test_bounds_cut_the_flushes_in_order(
    options: dict[str, Any], items: str, batches: list[list[str]]
) -> None:
    flush = Flushes()
    group = make(flush, **options)
    tasks = submit(group, *items.split())
    for expected in batches:
        taken, answer = await flush.next()
        assert taken == expected
        answer.set_result(upper(taken))
    assert await asyncio.gather(*tasks) == items.upper().split()


async def test_an_item_can_fail_alone() -> None:
    flush = Flushes()
    group = make(flush)
    tasks = submit(group, "a", "bad", "c")
    items, answer = await flush.next()
    assert items == ["a", "bad", "c"]
    answer.set_result(["A", ValueError("bad item"), "C"])
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert results[0] == "A" and results[2] == "C"
    assert isinstance(results[1], ValueError) and str(results[1]) == "bad item"


async def test_a_failed_flush_fails_its_batch_only() -> None:
    flush = Flushes()
    group = make(flush)
    first = submit(group, "a", "b")
    items, answer = await flush.next()
    second = submit(group, "c")
    await eventually(lambda: group.pending == 1, "one item waiting")
    answer.set_exception(StoreUnavailable("database gone"))
    items, answer = await flush.next()
    answer.set_result(upper(items))
    for task in first:
        with pytest.raises(StoreUnavailable, match="database gone"):
            await task
    assert await second[0] == "C"


async def test_a_flush_answering_the_wrong_number_of_items_fails_the_batch() -> None:
    flush = Flushes()
    group = make(flush)
    tasks = submit(group, "a", "b")
    _, answer = await flush.next()
    answer.set_result(["A"])
    for task in tasks:
        with pytest.raises(RuntimeError, match="1 outcomes for 2 items"):
            await task


async def test_cancelled_callers_lose_nothing_and_leave_no_unretrieved_error() -> None:
    reported: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: reported.append(context))
    flush = Flushes()
    group = make(flush)
    busy = submit(group, "a")
    _, first = await flush.next()  # "a" is being flushed; the rest waits
    waiting, cancelled, failing = submit(group, "b", "c", "d")
    await eventually(lambda: group.pending == 3, "three items waiting")
    for task in (busy[0], cancelled):
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    first.set_result(["A"])
    items, second = await flush.next()
    assert items == ["b", "c", "d"]  # the cancelled caller's item is still written
    second.set_result(["B", "C", ValueError("d failed")])
    assert await waiting == "B"
    with pytest.raises(ValueError, match="d failed"):
        await failing
    await group.close()
    gc.collect()
    assert reported == []


async def test_close_drains_then_refuses() -> None:
    flush = Flushes()
    group = make(flush, max_items=1)
    tasks = submit(group, "a", "b")
    items, answer = await flush.next()
    closing = asyncio.create_task(group.close())
    await eventually(lambda: group.closed, "the group closing")
    with pytest.raises(StoreUnavailable, match="test writer is closed"):
        await group.submit("late")
    answer.set_result(upper(items))
    items, answer = await flush.next()
    assert items == ["b"]  # accepted before close: still flushed
    assert not closing.done()
    answer.set_result(upper(items))
    await closing
    assert await asyncio.gather(*tasks) == ["A", "B"]
    assert flush.batches == [["a"], ["b"]]


async def test_close_when_idle_returns_at_once() -> None:
    group = make(Flushes())
    await group.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        await group.submit("a")


async def test_a_full_queue_refuses_at_once_when_told_not_to_wait() -> None:
    flush = Flushes()
    group = make(flush, max_pending=2, wait_when_full=False)
    tasks = submit(group, "a")
    items, answer = await flush.next()  # "a" taken: two more may wait
    tasks += submit(group, "b", "c")
    await eventually(lambda: group.pending == 2, "two items waiting")
    with pytest.raises(StoreUnavailable, match=r"test writer is full \(2 items waiting\)"):
        await group.submit("d")
    answer.set_result(upper(items))
    items, answer = await flush.next()
    answer.set_result(upper(items))
    assert await asyncio.gather(*tasks) == ["A", "B", "C"]
    assert flush.batches == [["a"], ["b", "c"]]


async def test_a_full_queue_makes_the_submitter_wait_for_room() -> None:
    flush = Flushes()
    group = make(flush, max_pending=2)
    tasks = submit(group, "a")
    items, answer = await flush.next()
    tasks += submit(group, "b", "c", "d")
    await eventually(lambda: group.pending == 2, "two items waiting")
    assert not tasks[3].done()  # "d" waits for room
    answer.set_result(upper(items))
    items, answer = await flush.next()
    assert items == ["b", "c"]
    answer.set_result(upper(items))
    items, answer = await flush.next()
    assert items == ["d"]
    answer.set_result(upper(items))
    assert await asyncio.gather(*tasks) == ["A", "B", "C", "D"]


async def test_closing_refuses_submitters_still_waiting_for_room() -> None:
    flush = Flushes()
    group = make(flush, max_pending=1)
    tasks = submit(group, "a")
    items, answer = await flush.next()
    tasks += submit(group, "b", "c")
    await eventually(lambda: group.pending == 1, "one item waiting")
    closing = asyncio.create_task(group.close())
    with pytest.raises(StoreUnavailable, match="closed"):
        await tasks[2]
    answer.set_result(upper(items))
    items, answer = await flush.next()
    answer.set_result(upper(items))
    await closing
    assert await asyncio.gather(*tasks[:2]) == ["A", "B"]


async def test_an_interrupted_flusher_fails_everything_it_leaves_behind() -> None:
    flush = Flushes()
    group = make(flush)
    tasks = submit(group, "a")
    await flush.next()
    tasks += submit(group, "b")
    await eventually(lambda: group.pending == 1, "one item waiting")
    flusher = group._flusher
    assert flusher is not None
    flusher.cancel()
    for task in tasks:
        with pytest.raises(StoreUnavailable, match="interrupted"):
            await task
    assert not group.busy
    # A later item starts a new flusher.
    later = submit(group, "c")
    items, answer = await flush.next()
    answer.set_result(upper(items))
    assert await later[0] == "C"


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="max_items must be at least 1"):
        make(Flushes(), max_items=0)
    with pytest.raises(ValueError, match="max_bytes needs size"):
        make(Flushes(), max_bytes=10)


# A run of rounds: in each, some items are submitted while the previous flush is
# still open, then that flush is answered with a mix of results, per-item errors,
# or one error for the whole batch.
rounds = st.lists(
    st.tuples(st.integers(0, 6), st.sampled_from(["ok", "items", "batch"])),
    min_size=1,
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(rounds=rounds, max_items=st.one_of(st.none(), st.integers(1, 4)))
def test_every_item_is_flushed_once_and_answered_once_in_order(
    rounds: list[tuple[int, str]], max_items: int | None
) -> None:
    asyncio.run(_run_rounds(rounds, max_items))


async def _run_rounds(rounds: list[tuple[int, str]], max_items: int | None) -> None:
    flush = Flushes()
    group = make(flush, max_items=max_items)
    expected: dict[str, str] = {}
    tasks: dict[str, asyncio.Task[str]] = {}

    def answer(call: tuple[list[str], asyncio.Future[Outcomes]], mode: str) -> None:
        items, future = call
        assert max_items is None or len(items) <= max_items
        if mode == "batch":
            future.set_exception(StoreUnavailable("batch failed"))
            expected.update(dict.fromkeys(items, "batch failed"))
            return
        fail = mode == "items"
        outcomes = [
            ValueError(f"{i} failed") if fail and n % 2 else i.upper() for n, i in enumerate(items)
        ]
        future.set_result(outcomes)
        expected.update(
            {
                i: str(o) if isinstance(o, ValueError) else o
                for i, o in zip(items, outcomes, strict=True)
            }
        )

    def accepted() -> bool:
        return group.pending + sum(len(b) for b in flush.batches) == len(tasks)

    held = None  # the flush in progress, waiting for this test's answer
    for size, mode in rounds:
        names = [f"i{len(tasks) + n}" for n in range(size)]
        tasks.update(zip(names, submit(group, *names), strict=True))
        await eventually(accepted, "the new items accepted")
        if held is None and size:
            held = await flush.next()
        if held is not None:
            answer(held, mode)
            held = await flush.next() if group.pending else None
    closing = asyncio.create_task(group.close())
    while held is not None:
        answer(held, "ok")
        held = await flush.next() if group.pending else None
    await closing
    flushed = [item for batch in flush.batches for item in batch]
    assert flushed == list(tasks)  # each item flushed once, in the order submitted
    for name, task in tasks.items():
        try:
            result = await task
        except (ValueError, StoreUnavailable) as exc:
            result = str(exc)
        assert result == expected[name]
