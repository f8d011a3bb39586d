"""Read-side SQL of the time-in-state answers. Never writes; reads only the read model the
forecasts cron keeps (one indexed look-up of `time_in_state` per answer, and `decision_curves`,
one row per market and type), never the stays or the history."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import utcnow
from app.core.filtering import where_given
from app.core.models import DecisionCurve, Registration, RegistrationForecast, TimeInState


@dataclass(frozen=True, slots=True)
class StatsFilters:
    project_id: str | None = None
    market_code: str | None = None
    registration_type: str | None = None
    status: str | None = None
    since: datetime | None = None
    """Stays that began on or after the first day of this time's month (UTC)."""


def figures_statement(filters: StatsFilters, month: date) -> Select[TimeInState]:
    statement = where_given(
        select(TimeInState).where(TimeInState.since_month == month),
        (TimeInState.project_id, filters.project_id),
        (TimeInState.market_code, filters.market_code),
        (TimeInState.registration_type, filters.registration_type),
        (TimeInState.status, filters.status),
    )
    return statement.order_by(
        TimeInState.project_id,
        TimeInState.market_code.nulls_last(),
        TimeInState.registration_type.nulls_last(),
        TimeInState.status,
    )


async def last_computed(session: AsyncSession) -> datetime | None:
    """When the forecasts cron last rebuilt the figures: the `computed_at` of `time_in_state` or
    `decision_curves` (None before a run found any stay). Every run rebuilds both whole with one
    `computed_at`, so one row of each tells."""
    newest = func.greatest(
        select(TimeInState.computed_at).limit(1).scalar_subquery(),
        select(DecisionCurve.computed_at).limit(1).scalar_subquery(),
    )
    return await session.scalar(select(newest))


async def window(session: AsyncSession, since: datetime | None) -> date:
    """The window start month an answer uses: `since`'s month, no earlier than the oldest kept
    (whose figures hold every stay before it too); the oldest kept without `since`."""
    oldest: date | None = await session.scalar(select(func.min(TimeInState.since_month)))
    asked = None if since is None else since.date().replace(day=1)
    if oldest is None:
        return asked or utcnow().date().replace(day=1)
    return oldest if asked is None else max(asked, oldest)


async def figures(
    session: AsyncSession, filters: StatsFilters, month: date
) -> Sequence[TimeInState]:
    return (await session.scalars(figures_statement(filters, month))).all()


async def decisions(session: AsyncSession, filters: StatsFilters) -> Sequence[DecisionCurve]:
    statement = where_given(
        select(DecisionCurve),
        (DecisionCurve.project_id, filters.project_id),
        (DecisionCurve.market_code, filters.market_code),
        (DecisionCurve.registration_type, filters.registration_type),
    )
    statement = statement.order_by(
        DecisionCurve.project_id,
        DecisionCurve.market_code.nulls_last(),
        DecisionCurve.registration_type.nulls_last(),
    )
    return (await session.scalars(statement)).all()


async def forecasts_of(
    session: AsyncSession, registration_ids: Sequence[str]
) -> dict[str, RegistrationForecast]:
    """The forecasts of these registrations (a page's), by primary key; absent: not yet computed."""
    if not registration_ids:
        return {}
    rows = await session.scalars(
        select(RegistrationForecast).where(
            RegistrationForecast.registration_id.in_(list(registration_ids))
        )
    )
    return {row.registration_id: row for row in rows}


@dataclass(frozen=True, slots=True)
class Aging:
    """An undecided registration as the console's Aging page shows it."""

    forecast: RegistrationForecast
    status: str
    sender_ids: list[str]


def aging_statement(limit: int) -> Select[RegistrationForecast, str, list[str]]:
    """Undecided, submitted registrations, overdue first, then longest waiting on Sinch: a walk of
    the partial index `ix_registration_forecasts_aging` (migration 0011), bounded by `limit`."""
    f = RegistrationForecast
    return (
        select(f, Registration.status, Registration.sender_ids)
        .join(Registration, Registration.id == f.registration_id)
        .where(f.decided_at.is_(None), f.submitted_at.is_not(None))
        .order_by(f.overdue.desc(), f.sinch_seconds.desc())
        .limit(limit)
    )


async def aging(session: AsyncSession, limit: int) -> list[Aging]:
    rows = (await session.execute(aging_statement(limit))).tuples()
    return [Aging(forecast, status, sender_ids) for forecast, status, sender_ids in rows]
