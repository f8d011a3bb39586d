"""The console's Aging page (`/console/aging`): open registrations by their wait on Sinch
against their market's p50 and p85, and the time-in-state figures per market."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.console import charts
from app.console.access import ViewerDep
from app.console.pages import page
from app.core.db import utcnow
from app.forecasts import queries as forecast_queries
from app.forecasts.model import MIN_SAMPLES
from app.web.deps import ResourcesDep

router = APIRouter(prefix="/console")

AGING_ROWS = 100
"""Open registrations the Aging page lists (overdue first, longest waiting first)."""
AGING_CHART_ROWS = 30
STALE_RUNS = 3
"""Figures older than this many forecasts intervals are flagged: the cron is not running."""


def stale(computed: datetime | None, interval_seconds: int, now: datetime) -> bool:
    """Whether figures computed at `computed` are older than `STALE_RUNS` intervals of the
    forecasts cron: no process runs it (by default the delivery worker does). None (no figure
    yet) is not stale: a new install has nothing to derive them from."""
    return computed is not None and (now - computed).total_seconds() > STALE_RUNS * interval_seconds


@router.get("/aging")
async def aging(request: Request, resources: ResourcesDep, who: ViewerDep) -> HTMLResponse:
    """Open registrations by their wait on Sinch against their market's p50 and p85, overdue
    first, and the time-in-state figures per market: all read from the forecasts read model."""
    async with resources.reader() as session:
        waiting = await forecast_queries.aging(session, AGING_ROWS)
        curves = await forecast_queries.decisions(session, forecast_queries.StatsFilters())
        month = await forecast_queries.window(session, None)
        figures = await forecast_queries.figures(session, forecast_queries.StatsFilters(), month)
        computed = await forecast_queries.last_computed(session)
    settings = resources.settings
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
            "computed": computed,
            "stale": stale(computed, settings.forecast_interval_seconds, utcnow()),
            "interval_seconds": settings.forecast_interval_seconds,
            "stale_runs": STALE_RUNS,
            "cron_process": (
                "the worker (arq app.worker.WorkerSettings)"
                if settings.delivery_worker == "shared"
                else "a delivery worker (arq app.worker.DeliveryWorkerSettings)"
            ),
        },
    )
