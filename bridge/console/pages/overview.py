"""Overview: per destination health, unrouted leads, the last day's deliveries."""

from __future__ import annotations

import time
from typing import Any

from starlette.responses import Response
from starlette.routing import Route

from bridge.console.web import Call, Console


def _worker_state(console: Console, name: str, now: float) -> dict[str, Any]:
    engine = console.state.engine
    if engine is None:
        return {"running": False, "paused_for": None}
    worker = next((w for w in engine.workers if w.name == name), None)
    if worker is None:
        return {"running": False, "paused_for": None}
    paused = worker.paused_until - now
    return {
        "running": worker.task is not None and not worker.task.done(),
        "paused_for": paused if paused > 0 else None,
    }


async def overview(console: Console, call: Call) -> Response:
    state = console.state
    now = time.time()
    status = await state.store.status(now)
    by_name = {d.destination: d for d in status.destinations}
    configured = {d.name: d for d in state.runtime.destinations}
    rows = []
    for name in sorted(set(by_name) | set(configured)):
        row = by_name.get(name)
        dest = configured.get(name)
        last_dead = await state.store.list_deliveries(status="dead", destination=name, limit=1)
        rows.append(
            {
                "name": name,
                "type": dest.config.type if dest else None,
                "configured": dest is not None,
                "enabled": bool(dest and dest.config.enabled),
                "counts": row.counts if row else {},
                "in_flight": row.in_flight if row else 0,
                "oldest_pending_age": now - row.oldest_pending_at
                if row and row.oldest_pending_at
                else None,
                "last_error": last_dead[0].last_error if last_dead else None,
                "last_error_at": last_dead[0].updated_at if last_dead else None,
                **_worker_state(console, name, now),
            }
        )
    return console.render(
        call.request,
        "overview.html",
        call.principal,
        status=status,
        destinations=rows,
        workers=state.engine is not None,
        chart=None,
        drift=[],
    )


def routes(console: Console) -> list[Route]:
    return [Route("/", console.page(overview), methods=["GET"])]
