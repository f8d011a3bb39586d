"""The console's Aging page (`/console/aging`): open registrations by their wait on Sinch
against their market's p50 and p85, and the time-in-state figures per market."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.console import charts
from app.console.access import ViewerDep
from app.console.pages import page
from app.forecasts import queries as forecast_queries
from app.forecasts.model import MIN_SAMPLES
from app.web.deps import ResourcesDep

router = APIRouter(prefix="/console")

AGING_ROWS = 100
"""Open registrations the Aging page lists (overdue first, longest waiting first)."""
AGING_CHART_ROWS = 30


@router.get("/aging")
async def aging(request: Request, resources: ResourcesDep, who: ViewerDep) -> HTMLResponse:
    """Open registrations by their wait on Sinch against their market's p50 and p85, overdue
    first, and the time-in-state figures per market: all read from the forecasts read model."""
    async with resources.reader() as session:
        waiting = await forecast_queries.aging(session, AGING_ROWS)
        curves = await forecast_queries.decisions(session, forecast_queries.StatsFilters())
        month = await forecast_queries.window(session, None)
        figures = await forecast_queries.figures(session, forecast_queries.StatsFilters(), month)
    by_market = {(c.project_id, c.market_code, c.registration_type): c for c in curves}

    def age(row: forecast_queries.Aging) -> charts.Age:
        f = row.forecast
        curve = by_market.get((f.project_id, f.market_code, f.registration_type))
        known = curve is not None and curve.samples >= MIN_SAMPLES
        name = (row.sender_ids or [row.forecast.registration_id])[0]
        return charts.Age(
            label=f"{row.forecast.market_code or '?'} {name}",
            seconds=row.forecast.sinch_seconds,
            p50=curve.p50 if known and curve is not None else None,
            p85=curve.p85 if known and curve is not None else None,
            overdue=row.forecast.overdue,
        )

    return page(
        request,
        "aging.html",
        {
            "viewer": who,
            "waiting": waiting,
            "overdue_count": sum(1 for row in waiting if row.forecast.overdue),
            "chart": charts.ages(
                [age(row) for row in waiting[:AGING_CHART_ROWS]],
                title="Open registrations: wait on Sinch against the market's p50 and p85",
            ),
            "curves": curves,
            "figures": figures,
            "since": month,
            "min_samples": MIN_SAMPLES,
        },
    )
