"""What the app's parts share at run time: the runtime config, the store, the
metrics and, where this process delivers, the engine. Built by
:func:`bridge.app.create_app`; the admin API and the console read it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.destinations import Runtime
    from bridge.engine import Engine
    from bridge.metrics import Metrics
    from bridge.store.base import Store


@dataclass
class AppState:
    runtime: Runtime
    store: Store
    metrics: Metrics
    engine: Engine | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
