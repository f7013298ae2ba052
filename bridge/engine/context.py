"""What every part of the delivery engine shares: the store, metrics, settings,
clocks, the outcome finisher, and whether the engine is stopping."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bridge.config import WorkerConfig
from bridge.engine.finisher import Finisher
from bridge.metrics import Metrics
from bridge.retry import Clock, Sleep
from bridge.store.base import Store


@dataclass
class EngineContext:
    store: Store
    metrics: Metrics
    worker: WorkerConfig
    finisher: Finisher
    clock: Clock  # wall clock (leases, pauses, due times)
    monotonic: Clock  # deadlines, rate tokens
    sleep: Sleep
    rng: Callable[[], float]
    stopping: bool = False
