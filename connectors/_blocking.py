"""The base of connectors whose SDK blocks (simple-salesforce, hubspot-api-client).

It owns what each such connector would otherwise repeat:

* **The thread pool.** Created by :meth:`startup`, shut down only by :meth:`close`.
  Re-authentication never touches it, so calls queued for a thread keep their
  place; a call the pool drops on close ends in a :class:`RetryableError`, never
  in a silent cancellation.
* **A timeout per call**, on the asyncio side: the SDKs set none by default, and
  a socket timeout bounds only each read, not the whole call.
* **Re-authentication against the credentials that actually failed.** Every
  credential set gets a generation number. A call refused with generation *g*
  remembers *g* (per asyncio task); :meth:`reauthenticate` then refreshes only
  if *g* is still current. Concurrent refusals therefore cause one refresh, and a
  refusal of fresh credentials is never mistaken for a stale one.

A subclass implements :meth:`authenticate` (return the credentials or client a
call needs), optionally :meth:`retire` (release a replaced one), sets
``call_timeout``, and runs each SDK call through :meth:`call`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import ClassVar, Generic, TypeVar

from bridge.errors import AuthError, RetryableError
from connectors.base import Connector, ConnectorSettings

Creds = TypeVar("Creds")
T = TypeVar("T")

# The generation of the credentials this task's last refused call used. The engine
# sends and re-authenticates in the same task, so it reads what its own send set.
_refused: ContextVar[int | None] = ContextVar("lead_bridge_refused_generation", default=None)


class BlockingConnector(Connector, Generic[Creds]):
    # Threads for blocking calls (the destination's flow.concurrency is lower).
    max_threads: ClassVar[int] = 64
    # How messages name the remote service ("HubSpot").
    label: ClassVar[str] = "the destination"

    def __init__(self, name: str, settings: ConnectorSettings) -> None:
        super().__init__(name, settings)
        self._pool: ThreadPoolExecutor | None = None
        self._creds: Creds | None = None
        self._generation = 0
        self._auth_lock = asyncio.Lock()

    # ---------------------------------------------------------------- subclass hooks

    @property
    def call_timeout(self) -> float:
        """Upper bound on one SDK call, queueing for a thread included."""
        raise NotImplementedError

    async def authenticate(self) -> Creds:
        """Sign in; return what :meth:`call` hands to each SDK function."""
        raise NotImplementedError

    def retire(self, creds: Creds) -> None:
        """Release credentials that were replaced or closed (calls may still use them)."""

    # ---------------------------------------------------------------- lifecycle

    async def startup(self) -> None:
        # Idempotent: the engine calls it again after a failed start.
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                self.max_threads, thread_name_prefix=f"{self.type_name}-{self.name}"
            )
        async with self._auth_lock:
            if self._creds is None:
                self._creds = await self.authenticate()
                self._generation += 1

    async def reauthenticate(self) -> None:
        refused = _refused.get()
        _refused.set(None)
        async with self._auth_lock:
            if refused is not None and refused != self._generation:
                return  # another call already replaced the credentials this one used
            old = self._creds
            self._creds = await self.authenticate()
            self._generation += 1
        if old is not None:
            self.retire(old)

    async def close(self) -> None:
        creds, self._creds = self._creds, None
        if creds is not None:
            self.retire(creds)
        pool, self._pool = self._pool, None
        if pool is not None:
            # Queued calls are dropped; their callers get a RetryableError (see call()).
            pool.shutdown(wait=False, cancel_futures=True)

    # ---------------------------------------------------------------- one call

    async def call(self, fn: Callable[[Creds], T]) -> T:
        """Run ``fn(credentials)`` on the pool, bounded by ``call_timeout``.

        ``fn`` raises classified :class:`~bridge.errors.DeliveryError` s (the
        connector's ``classify()``); an :class:`AuthError` remembers which
        credentials were refused, for :meth:`reauthenticate`.
        """
        creds, generation, pool = self._creds, self._generation, self._pool
        if creds is None or pool is None:
            raise RuntimeError(f"{self.label} destination {self.name!r} was not started")
        timeout = self.call_timeout
        future = asyncio.get_running_loop().run_in_executor(pool, fn, creds)
        try:
            async with asyncio.timeout(timeout):
                return await future
        except AuthError:
            _refused.set(generation)
            raise
        except TimeoutError:
            raise RetryableError(f"{self.label} call timed out after {timeout:g}s") from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # our caller is being cancelled: not ours to turn into an outcome
            # The pool dropped the queued call (the connector was closed).
            raise RetryableError(
                f"the {self.label} call was dropped before it ran (connector closed)"
            ) from None
