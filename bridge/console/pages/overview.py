"""Overview: per destination health, unrouted leads, the last day's deliveries,
schema drift (operations.overview)."""

from __future__ import annotations

from starlette.responses import Response
from starlette.routing import Route

from bridge.console.chart import bar_chart
from bridge.console.web import Call, Console
from bridge.operations.overview import HOURS, LocalEngineView, overview, unrouted_leads

UNROUTED_SHOWN = 20


async def overview_page(console: Console, call: Call) -> Response:
    state = console.state
    view = LocalEngineView(state.engine, state.metrics)
    data = await overview(state.store, state.runtime, view)
    start = data.generated_at - HOURS * 3600
    totals = [sum(d.per_hour[i] for d in data.destinations) for i in range(HOURS)]
    chart = (
        bar_chart(
            [(start + i * 3600, n) for i, n in enumerate(totals)],
            "deliveries per hour, last 24 hours",
        )
        if any(totals)
        else None
    )
    return console.render(
        call.request,
        "overview.html",
        call.principal,
        data=data,
        workers=state.engine is not None,
        chart=chart,
        total_24h=sum(totals),
        unrouted=await unrouted_leads(state.store, limit=UNROUTED_SHOWN) if data.unrouted else [],
    )


def routes(console: Console) -> list[Route]:
    return [Route("/", console.page(overview_page), methods=["GET"])]
