"""The one module that writes the time-in-state read model: `registration_stays`,
`registration_forecasts`, `time_in_state`, `decision_curves` (and the cron's reads over them).
Nothing here commits: callers own the transaction (app/forecasts/service.py); `alone` holds the
run's lock on a connection of its own.

The statements that walk every stay or clock (`stay_bins`, `clock_bins`) are the cron's, never a
request's: a request reads `time_in_state`, `decision_curves` or one registration's forecast row.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final

from sqlalchemy import (
    Float,
    bindparam,
    case,
    delete,
    extract,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import UTCDateTime
from app.core.models import (
    DECISION_CURVES,
    REGISTRATION_FORECASTS,
    REGISTRATION_HISTORY,
    REGISTRATION_STAYS,
    REGISTRATIONS,
    TIME_IN_STATE,
)
from app.forecasts.model import FIRST_EDGE, OUTCOME_CODES, RATIO, STILL_OPEN, Forecast
from app.forecasts.stays import Clock, Stay

RUN_LOCK: Final = 0xF0CA_57ED
"""The advisory lock key a forecasts run holds from its start to its end."""


@contextlib.asynccontextmanager
async def alone(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[bool]:
    """Yields whether this run may go on: True while it holds `RUN_LOCK` (a session lock, on a
    connection of its own in autocommit, so that no transaction stays open through the run),
    False when another run holds it. Two runs at once (two workers' start-up runs, or an
    interval shorter than a run) would each find the same registration newly overdue and record
    its `overdue` change twice. A lock that cannot be released goes with its connection."""
    async with sessionmaker() as guard:
        await guard.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        held = bool(await guard.scalar(select(func.pg_try_advisory_lock(RUN_LOCK))))
        try:
            yield held
        finally:
            if held:
                try:
                    await guard.execute(select(func.pg_advisory_unlock(RUN_LOCK)))
                except BaseException:
                    await guard.invalidate()  # the server releases it with the connection
                    raise


_NOW = bindparam("now", type_=UTCDateTime())


@dataclass(frozen=True, slots=True)
class Stale:
    """A registration whose stays and clock must be derived again."""

    id: str
    project_id: str
    market_code: str | None
    registration_type: str | None
    eta_date: date | None
    updated_at: datetime
    document: Any
    history: list[tuple[str, datetime]]
    """(to_status, at) in the order applied."""


async def stale(session: AsyncSession, after: str, limit: int) -> list[Stale]:
    """Up to `limit` registrations after id `after`, in id order, changed since their stays were
    derived (or never derived), with their history: `registrations.updated_at` moves with every
    write of the registration. In id order from a cursor, each batch reads on from where the last
    stopped: without one, each batch walked again past every registration already derived."""
    f = REGISTRATION_FORECASTS
    rows = (
        await session.execute(
            select(
                REGISTRATIONS.c.id,
                REGISTRATIONS.c.project_id,
                REGISTRATIONS.c.market_code,
                REGISTRATIONS.c.registration_type,
                REGISTRATIONS.c.eta_date,
                REGISTRATIONS.c.updated_at,
                REGISTRATIONS.c.sinch,
            )
            .select_from(REGISTRATIONS.outerjoin(f, f.c.registration_id == REGISTRATIONS.c.id))
            .where(
                REGISTRATIONS.c.id > after,
                or_(f.c.registration_id.is_(None), f.c.stays_from != REGISTRATIONS.c.updated_at),
            )
            .order_by(REGISTRATIONS.c.id)
            .limit(limit)
        )
    ).all()
    if not rows:
        return []
    history: dict[str, list[tuple[str, datetime]]] = {row.id: [] for row in rows}
    h = REGISTRATION_HISTORY
    for registration_id, status, at in await session.execute(
        select(h.c.registration_id, h.c.to_status, h.c.at)
        .where(h.c.registration_id.in_(list(history)))
        .order_by(h.c.id)
    ):
        history[registration_id].append((status, at))
    return [
        Stale(
            row.id,
            row.project_id,
            row.market_code,
            row.registration_type,
            row.eta_date,
            row.updated_at,
            row.sinch,
            history[row.id],
        )
        for row in rows
    ]


async def replace_stays(
    session: AsyncSession,
    derived: Sequence[tuple[Stale, list[Stay], Clock, float, float]],
    now: datetime,
) -> None:
    """Replace the stays of each registration and upsert its clock (`sinch_seconds` and the
    customer's as of `now`), leaving its forecast and its `overdue` mark to `write_forecasts`."""
    ids = [registration.id for registration, *_ in derived]
    await session.execute(
        delete(REGISTRATION_STAYS).where(REGISTRATION_STAYS.c.registration_id.in_(ids))
    )
    stays = [
        {
            "registration_id": registration.id,
            "project_id": registration.project_id,
            "market_code": registration.market_code,
            "registration_type": registration.registration_type,
            "status": stay.status,
            "entered_at": stay.entered_at,
            "left_at": stay.left_at,
        }
        for registration, registration_stays, *_ in derived
        for stay in registration_stays
    ]
    if stays:
        await session.execute(insert(REGISTRATION_STAYS), stays)
    clocks = [
        {
            "registration_id": registration.id,
            "project_id": registration.project_id,
            "market_code": registration.market_code,
            "registration_type": registration.registration_type,
            "eta_date": registration.eta_date,
            "submitted_at": clock.submitted_at,
            "decided_at": clock.decided_at,
            "outcome": clock.outcome,
            "customer_seconds": clock.customer_seconds,
            "waiting_on_customer_since": clock.waiting_on_customer_since,
            "sinch_seconds": sinch,
            "waited_customer_seconds": customer,
            "stays_from": registration.updated_at,
            "computed_at": now,
            "forecast_at": None,  # its clock changed: among the first the next step 4 forecasts
            "basis": "",
            "samples": 0,
        }
        for registration, _, clock, sinch, customer in derived
    ]
    statement = postgresql.insert(REGISTRATION_FORECASTS)
    kept = {"registration_id", "basis", "samples"}
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["registration_id"],
            set_={name: statement.excluded[name] for name in clocks[0] if name not in kept},
        ),
        clocks,
    )


def _bin(seconds: Any) -> Any:
    """`model.bin_of` in SQL."""
    return case(
        (seconds < FIRST_EDGE, literal(0)),
        else_=1 + func.floor(func.ln(seconds / FIRST_EDGE) / func.ln(literal(RATIO))),
    ).cast(postgresql.INTEGER)


async def stay_bins(session: AsyncSession, now: datetime) -> Sequence[Any]:
    """Every stay, counted per (project, market, type, status, month it began, bin, still
    open)."""
    s = REGISTRATION_STAYS
    seconds = func.greatest(
        extract("epoch", func.coalesce(s.c.left_at, _NOW) - s.c.entered_at), 0.0
    )
    month = func.date_trunc("month", func.timezone("UTC", s.c.entered_at)).cast(postgresql.DATE)
    bin_ = _bin(seconds).label("bin")
    still = s.c.left_at.is_(None).label("open")
    statement = select(
        s.c.project_id,
        s.c.market_code,
        s.c.registration_type,
        s.c.status,
        month.label("month"),
        bin_,
        still,
        func.count().label("count"),
    ).group_by(
        s.c.project_id, s.c.market_code, s.c.registration_type, s.c.status, month, bin_, still
    )
    return (await session.execute(statement, {"now": now})).all()


def _sinch_seconds() -> Any:
    """A clock's time waiting on Sinch as of `now` (stays.Clock.seconds_at, in SQL)."""
    f = REGISTRATION_FORECASTS
    waited = (
        extract("epoch", _NOW - f.c.submitted_at)
        - f.c.customer_seconds
        - func.coalesce(extract("epoch", _NOW - f.c.waiting_on_customer_since), 0.0)
    )
    return case(
        (f.c.decided_at.is_not(None), f.c.sinch_seconds),
        else_=func.greatest(waited, 0.0),
    ).cast(Float())


async def clock_bins(session: AsyncSession, now: datetime) -> Sequence[Any]:
    """The submitted registrations' waits on Sinch, counted per (project, market, type, bin,
    outcome code), with in each group the decided ones that had an `etaDate` and those decided
    by its end."""
    f = REGISTRATION_FORECASTS
    outcome = case(
        *((f.c.outcome == name, literal(code)) for name, code in OUTCOME_CODES.items()),
        else_=literal(STILL_OPEN),
    ).label("outcome")
    bin_ = _bin(_sinch_seconds()).label("bin")
    had_eta = (f.c.decided_at.is_not(None)) & (f.c.eta_date.is_not(None))
    held = had_eta & (func.timezone("UTC", f.c.decided_at).cast(postgresql.DATE) <= f.c.eta_date)
    statement = (
        select(
            f.c.project_id,
            f.c.market_code,
            f.c.registration_type,
            bin_,
            outcome,
            func.count().label("count"),
            func.count().filter(had_eta).label("eta_samples"),
            func.count().filter(held).label("eta_held"),
        )
        .where(f.c.submitted_at.is_not(None))
        .group_by(f.c.project_id, f.c.market_code, f.c.registration_type, bin_, outcome)
    )
    return (await session.execute(statement, {"now": now})).all()


async def replace_time_in_state(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    await session.execute(delete(TIME_IN_STATE))
    if rows:
        await session.execute(insert(TIME_IN_STATE), rows)


async def replace_decision_curves(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    await session.execute(delete(DECISION_CURVES))
    if rows:
        await session.execute(insert(DECISION_CURVES), rows)


@dataclass(frozen=True, slots=True)
class Undecided:
    id: str
    project_id: str
    status: str
    market_code: str | None
    registration_type: str | None
    eta_date: date | None
    clock: Clock
    overdue: bool


async def stalest_undecided(session: AsyncSession, before: datetime, limit: int) -> list[Undecided]:
    """Up to `limit` registrations without a decision and not forecast since `before` (the run's
    time: what this run forecast is not read again), the stalest first: those never forecast
    since their clock was derived, then by `forecast_at` (the partial index
    `ix_registration_forecasts_stalest`); with their current status."""
    f = REGISTRATION_FORECASTS
    rows = await session.execute(
        select(f, REGISTRATIONS.c.status)
        .join(REGISTRATIONS, REGISTRATIONS.c.id == f.c.registration_id)
        .where(f.c.decided_at.is_(None), or_(f.c.forecast_at.is_(None), f.c.forecast_at < before))
        .order_by(f.c.forecast_at.asc().nulls_first(), f.c.registration_id)
        .limit(limit)
    )
    return [
        Undecided(
            row.registration_id,
            row.project_id,
            row.status,
            row.market_code,
            row.registration_type,
            row.eta_date,
            Clock(
                row.submitted_at,
                None,
                None,
                row.customer_seconds,
                row.waiting_on_customer_since,
            ),
            row.overdue,
        )
        for row in rows
    ]


_WRITE_FORECAST: Final = (
    update(REGISTRATION_FORECASTS)
    .where(REGISTRATION_FORECASTS.c.registration_id == bindparam("p_id"))
    .values(
        decision_p50=bindparam("p_p50"),
        decision_p85=bindparam("p_p85"),
        overdue=bindparam("p_overdue"),
        overdue_since=case(
            (bindparam("p_overdue"), func.coalesce(REGISTRATION_FORECASTS.c.overdue_since, _NOW)),
            else_=None,
        ),
        basis=bindparam("p_basis"),
        samples=bindparam("p_samples"),
        approval_chance=bindparam("p_chance"),
        sinch_seconds=bindparam("p_sinch"),
        waited_customer_seconds=bindparam("p_customer"),
        computed_at=_NOW,
        forecast_at=_NOW,
    )
)


async def write_forecasts(
    session: AsyncSession, forecasts: Sequence[tuple[str, Forecast]], now: datetime
) -> None:
    """Each registration's forecast; `overdue_since` set when it becomes overdue, kept while it
    stays overdue, cleared when it no longer is."""
    if not forecasts:
        return
    await session.execute(
        _WRITE_FORECAST,
        [
            {
                "p_id": registration_id,
                "p_p50": forecast.decision_p50,
                "p_p85": forecast.decision_p85,
                "p_overdue": forecast.overdue,
                "p_basis": forecast.basis.value,
                "p_samples": forecast.samples,
                "p_chance": forecast.approval_chance,
                "p_sinch": forecast.sinch_seconds,
                "p_customer": forecast.customer_seconds,
                "now": now,
            }
            for registration_id, forecast in forecasts
        ],
    )
