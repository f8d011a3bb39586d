"""`GET /v1/stats/time-in-state`: how long registrations stay in each state, per market and type.
HTTP only."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from app.core.schemas import QueryTime, operation, text_filter
from app.forecasts import queries
from app.forecasts.schemas import DecisionItem, TimeInStateItem, TimeInStateOut
from app.web.auth import api_router
from app.web.deps import ReadSessionDep

router = api_router("/v1/stats", "stats")


@router.get(
    "/time-in-state",
    **operation(
        "getTimeInState",
        "Time in each state per market and type: p50, p85, p95 and the sample size",
        description="Per Sinch project, measured on Sinch's clock (the document's logs and the "
        "callbacks' times), stays still running counted as censored (Kaplan-Meier). Read from "
        "figures the forecasts cron keeps (every `FORECAST_INTERVAL_SECONDS`), so the answer "
        "costs the same whatever the history holds. `decisions` gives, per market and type, the "
        "time waiting on Sinch from submission to a decision and the share of Sinch's `etaDate`s "
        "that held.",
    ),
)
async def get_time_in_state(
    session: ReadSessionDep,
    project_id: Annotated[
        str | None, text_filter("Only this Sinch project's registrations.", alias="projectId")
    ] = None,
    market_code: Annotated[
        str | None, text_filter("Only this market (e.g. `GB`).", alias="marketCode")
    ] = None,
    registration_type: Annotated[
        str | None,
        text_filter("Only this registration type.", alias="registrationType"),
    ] = None,
    status: Annotated[
        str | None, text_filter("Only stays in this state (e.g. `IN_PROGRESS`).")
    ] = None,
    since: Annotated[
        QueryTime | None,
        Query(
            description="Only stays that began on or after this time's month (ISO 8601 with an "
            "offset; the figures are kept per month, so the window starts on its first day)."
        ),
    ] = None,
) -> TimeInStateOut:
    filters = queries.StatsFilters(project_id, market_code, registration_type, status, since)
    month = await queries.window(session, since)
    rows = await queries.figures(session, filters, month)
    curves = await queries.decisions(session, filters)
    computed = [row.computed_at for row in rows] + [curve.computed_at for curve in curves]
    return TimeInStateOut(
        items=[TimeInStateItem.model_validate(row) for row in rows],
        since=month,
        decisions=[DecisionItem.of(curve) for curve in curves],
        computed_at=max(computed) if computed else None,
    )
