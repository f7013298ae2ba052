"""The blocking-SDK base: one thread pool per connector, a timeout per call, and
re-authentication against the credentials that actually failed."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest

from bridge.errors import AuthError, RetryableError
from connectors._blocking import BlockingConnector
from connectors.base import ConnectorSettings, DeliveryContext, DeliveryResult
from tests.waiting import eventually


class ToySettings(ConnectorSettings):
    timeout: float = 5.0


class Toy(BlockingConnector[str]):
    """Tokens t1, t2, ...: a call is refused unless its token is still valid."""

    type_name = "toy"
    label = "Toy"
    max_threads = 2

    def __init__(self) -> None:
        super().__init__("toy", ToySettings())
        self.issued: list[str] = []
        self.valid: set[str] = set()
        self.retired: list[str] = []
        self.running = 0  # calls started on a pool thread
        self._running_lock = threading.Lock()

    @property
    def call_timeout(self) -> float:
        assert isinstance(self.settings, ToySettings)
        return self.settings.timeout

    async def authenticate(self) -> str:
        token = f"t{len(self.issued) + 1}"
        self.issued.append(token)
        self.valid.add(token)
        return token

    def retire(self, creds: str) -> None:
        self.retired.append(creds)

    def check(self, hold: threading.Event | None = None) -> Callable[[str], str]:
        def fn(token: str) -> str:
            with self._running_lock:
                self.running += 1
            if hold is not None:
                assert hold.wait(10), "test did not release the call"
            if token not in self.valid:
                raise AuthError(f"token {token} refused", status_code=401)
            return f"{threading.current_thread().name} {token}"

        return fn

    async def send(self, record: Mapping[str, Any], context: DeliveryContext) -> DeliveryResult:
        return DeliveryResult(remote_id=await self.call(self.check()))


@pytest.fixture
async def toy() -> AsyncIterator[Toy]:
    connector = Toy()
    await connector.startup()
    yield connector
    await connector.close()


async def test_calls_run_on_the_connectors_own_threads(toy: Toy) -> None:
    answer = await toy.call(toy.check())
    assert answer.startswith("toy-toy") and answer.endswith("t1")


async def test_a_refusal_of_fresh_credentials_is_not_taken_for_a_stale_one(toy: Toy) -> None:
    hold = threading.Event()
    late_refused = asyncio.Event()
    may_reauthenticate = asyncio.Event()

    async def late() -> str:
        # Sent with t1, answered only after t2 was issued and refused in turn.
        try:
            return await toy.call(toy.check(hold))
        except AuthError:
            late_refused.set()
            await may_reauthenticate.wait()
            await toy.reauthenticate()
            return await toy.call(toy.check())

    slow = asyncio.create_task(late())
    toy.valid.clear()  # t1 expires
    with pytest.raises(AuthError):
        await toy.call(toy.check())
    await toy.reauthenticate()  # -> t2
    assert (await toy.call(toy.check())).endswith("t2")
    toy.valid.clear()  # t2 expires too
    with pytest.raises(AuthError):
        await toy.call(toy.check())  # refused with t2
    hold.set()
    await late_refused.wait()  # and now the late refusal of t1 comes in
    # A shared "last stale token" slot would now hold t1 and skip this refresh.
    await toy.reauthenticate()
    assert (await toy.call(toy.check())).endswith("t3")
    may_reauthenticate.set()
    assert (await slow).endswith("t3")  # t1 was replaced long ago: no refresh
    assert toy.issued == ["t1", "t2", "t3"]
    assert toy.retired == ["t1", "t2"]


async def test_concurrent_refusals_of_one_token_refresh_it_once(toy: Toy) -> None:
    toy.valid.clear()

    async def deliver() -> str:
        try:
            return await toy.call(toy.check())
        except AuthError:
            await toy.reauthenticate()
            return await toy.call(toy.check())

    answers = await asyncio.gather(*(deliver() for _ in range(6)))
    assert {a.split()[-1] for a in answers} == {"t2"}
    assert toy.issued == ["t1", "t2"]


async def test_reauthentication_keeps_the_pool_and_queued_calls(toy: Toy) -> None:
    hold = threading.Event()
    # Two threads: two calls run, two wait in the pool's queue.
    calls = [asyncio.create_task(toy.call(toy.check(hold))) for _ in range(4)]
    await eventually(lambda: toy.running == 2, "two calls running on the pool's threads")
    pool = toy._pool
    await toy.reauthenticate()
    assert toy._pool is pool
    hold.set()
    answers = await asyncio.gather(*calls)  # none cancelled, none on another pool
    assert all(a.startswith("toy-toy") for a in answers)


async def test_closing_drops_queued_calls_with_a_retryable_error(toy: Toy) -> None:
    hold = threading.Event()
    calls = [asyncio.create_task(toy.call(toy.check(hold))) for _ in range(4)]
    # Closed once two calls provably run (a busy machine may not have started the
    # pool's threads yet): those two finish, the two queued ones are dropped.
    await eventually(lambda: toy.running == 2, "two calls running on the pool's threads")
    await toy.close()
    hold.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    dropped = [r for r in results if isinstance(r, RetryableError)]
    assert len(dropped) == 2 and "dropped before it ran" in dropped[0].message
    # The two that were running finish with their own outcome (t1 is retired, still valid).
    assert sum(isinstance(r, str) for r in results) == 2


async def test_each_call_is_bounded_by_the_timeout() -> None:
    toy = Toy()
    toy.settings = ToySettings(timeout=0.05)
    await toy.startup()
    hold = threading.Event()
    try:
        with pytest.raises(RetryableError, match=r"Toy call timed out after 0.05s"):
            await toy.call(toy.check(hold))
    finally:
        hold.set()
        await toy.close()


async def test_cancelling_the_caller_still_cancels(toy: Toy) -> None:
    hold = threading.Event()
    task = asyncio.create_task(toy.call(toy.check(hold)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    hold.set()


async def test_send_before_startup_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="was not started"):
        await Toy().call(lambda token: token)
