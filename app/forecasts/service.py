"""Keeping the time-in-state read model: the forecasts cron's work (app/worker/tasks.py) and the
same from the command line. Owns its short transactions, like app/events/service.py's prune.

One run, in four steps, each bounded:
1. derive again the stays and decision clock of every registration written since they were
   derived (`registrations.updated_at`), `STALE_BATCH` registrations a transaction in id order,
   each batch reading on from the last: the cost follows what changed, not the history's size;
2. rebuild `time_in_state`: every stay counted in bins by one aggregate statement, then the
   quantiles per market, type and state for each window start month (`WINDOW_MONTHS`);
3. rebuild `decision_curves` the same way from the decision clocks;
4. forecast every undecided registration against its market's curve, `FORECAST_BATCH` a
   transaction, the stalest first (those whose clock step 1 derived again, then by when they were
   last forecast); one that has just become overdue gets a change of kind `overdue` on the feed
   (its subscribers' deliveries come when it is numbered), in the transaction that marks it:
   once, however many runs find it still overdue.
Steps 1 and 4 stop at the run's budget (`stop_at`): the next run goes on with what is left. Step
4's order leaves none behind for good as long as fewer registrations change between two runs than
a run forecasts (those go first).
A read (app/forecasts/queries.py) then costs one indexed look-up, whatever the history holds.

The cron runs in the delivery worker, at its lower CPU priority (app/worker/settings.py): in the
callbacks' worker, a run that derived thousands of registrations held their jobs for up to
seconds (bench/README.md, "And in the lag runs"). With `DELIVERY_WORKER=shared` it runs in the one
worker. Either way the steps' pure work (deriving, the quantiles, the forecasts) runs in a thread
(`asyncio.to_thread`), so that the event loop's other jobs run every few milliseconds; on the loop,
one batch held them for up to 174 ms (`bench.forecasts`, "the event loop held").
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.changes import repository as changes
from app.core.models import ChangeKind, ChangeSource
from app.forecasts import model, repository
from app.forecasts.estimators import cumulative_incidence
from app.forecasts.stays import Entry, clock_of, log_entries, stays_of, timeline

STALE_BATCH: Final = 500
FORECAST_BATCH: Final = 2_000
WINDOW_MONTHS: Final = 36
"""Window starts kept: the figures over stays that began in each of the last 36 months or later."""

Bins = list[tuple[int, int, float]]
Group = tuple[str, str | None, str | None]
"""(project, market, type): a project's registrations stand on its own history."""


@dataclass(frozen=True, slots=True)
class Report:
    derived: int
    """Registrations whose stays and clock were derived again."""
    forecast: int
    """Undecided registrations forecast."""
    overdue: int
    """Registrations that became overdue in this run (each an `overdue` change)."""
    complete: bool
    """False when `stop_at` came first: the next run goes on."""
    busy: bool = False
    """True when another run was under way (`repository.alone`): this one did nothing."""


def month_start(moment: date) -> date:
    return moment.replace(day=1)


def _months_back(start: date, count: int) -> list[date]:
    """`start` (a month's first day) and the `count - 1` months before it, newest first."""
    months, year, month = [], start.year, start.month
    for _ in range(count):
        months.append(date(year, month, 1))
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return months


async def derive_stale(session: AsyncSession, after: str, now: datetime) -> tuple[int, str | None]:
    """Step 1 for up to `STALE_BATCH` registrations after id `after`; answers how many, and the
    id to go on after (None at the end)."""
    found = await repository.stale(session, after, STALE_BATCH)
    if not found:
        return 0, None
    derived, decided = await asyncio.to_thread(_derive, found, now)
    await repository.replace_stays(session, derived, now)
    await repository.write_forecasts(session, decided, now)
    return len(found), found[-1].id if len(found) == STALE_BATCH else None


def _derive(found: list[repository.Stale], now: datetime) -> tuple[list[Any], list[Any]]:
    """Step 1's work on the registrations read: their stays and clocks, and the forecasts of
    those decided or not submitted. Pure; run in a thread (module docstring)."""
    derived = []
    decided = []
    for registration in found:
        entries = timeline(
            [
                *log_entries(registration.document),
                *(Entry(status, at) for status, at in registration.history),
            ]
        )
        clock = clock_of(entries)
        sinch, customer = clock.seconds_at(now)
        derived.append((registration, stays_of(entries), clock, sinch, customer))
        if clock.decided_at is not None or clock.submitted_at is None:
            decided.append((registration.id, model.forecast(clock, [], registration.eta_date, now)))
    return derived, decided


def time_in_state_rows(rows: Any, now: datetime) -> list[dict[str, Any]]:
    """Step 2's figures from `repository.stay_bins`: per project, market, type and state, for
    each window start month from the oldest stay's (at most `WINDOW_MONTHS` back), the quantiles
    of the stays that began in it or later (windows with no stay left out)."""
    by_group: dict[tuple[str, str | None, str | None, str], dict[date, Bins]] = defaultdict(
        lambda: defaultdict(list)
    )
    for row in rows:
        outcome = model.STILL_OPEN if row.open else 1
        group = (row.project_id, row.market_code, row.registration_type, row.status)
        by_group[group][row.month].append((row.bin, outcome, float(row.count)))
    # Windows from the month of the oldest stay (at most `WINDOW_MONTHS` back) to this month.
    first = min((m for by_month in by_group.values() for m in by_month), default=None)
    months = _months_back(month_start(now.date()), WINDOW_MONTHS)
    if first is not None:
        months = [m for m in months if m >= first] or months[:1]
    oldest = months[-1]
    figures = []
    for (project, market, kind, status), by_month in by_group.items():
        before_window: Bins = [b for m, bins in by_month.items() if m < oldest for b in bins]
        cumulative: Bins = []
        for month in months:  # newest first: each window adds its month to the one after it
            cumulative = cumulative + by_month.get(month, [])
            window = cumulative + (before_window if month == oldest else [])
            if not window:
                continue
            q = model.quantiles(window)
            figures.append(
                {
                    "project_id": project,
                    "since_month": month,
                    "market_code": market,
                    "registration_type": kind,
                    "status": status,
                    "p50": q.p50,
                    "p85": q.p85,
                    "p95": q.p95,
                    "samples": q.samples,
                    "open": q.open,
                    "computed_at": now,
                }
            )
    return figures


def decision_curve_rows(rows: Any, now: datetime) -> list[dict[str, Any]]:
    """Step 3's curves from `repository.clock_bins`, one per project, market and type."""
    bins: dict[Group, Bins] = defaultdict(list)
    eta: dict[Group, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        group = (row.project_id, row.market_code, row.registration_type)
        bins[group].append((row.bin, row.outcome, float(row.count)))
        eta[group][0] += row.eta_samples
        eta[group][1] += row.eta_held
    curves = []
    for (project, market, kind), group_bins in bins.items():
        q = model.quantiles(group_bins)
        approved = cumulative_incidence(model.observations(group_bins), model.APPROVED)
        share = approved[-1].value if approved else 0.0
        curves.append(
            {
                "project_id": project,
                "market_code": market,
                "registration_type": kind,
                "bins": [list(b) for b in group_bins],
                "samples": q.samples,
                "open": q.open,
                "p50": q.p50,
                "p85": q.p85,
                "approved_share": share if q.samples else None,
                "eta_samples": eta[(project, market, kind)][0],
                "eta_held": eta[(project, market, kind)][1],
                "computed_at": now,
            }
        )
    return curves


async def forecast_stalest(
    session: AsyncSession, curves: dict[Group, Bins], now: datetime, limit: int
) -> tuple[int, int]:
    """Step 4 for up to `limit` of the undecided registrations not forecast since `now` (the
    run's time), the stalest first. Answers how many were forecast and how many became overdue."""
    found = await repository.stalest_undecided(session, now, limit)
    forecasts, newly_overdue = await asyncio.to_thread(_forecast_each, found, curves, now)
    await repository.write_forecasts(session, forecasts, now)
    for status, ids in newly_overdue.items():
        await changes.record(
            session,
            ids,
            kind=ChangeKind.OVERDUE,
            from_status=status,
            at=now,
            source=ChangeSource.FORECAST,
            now=now,
        )
    return len(found), sum(len(ids) for ids in newly_overdue.values())


def _forecast_each(
    found: list[repository.Undecided], curves: dict[Group, Bins], now: datetime
) -> tuple[list[Any], dict[str, list[str]]]:
    """Step 4's work on the registrations read: each one's forecast, and the ids newly overdue
    by status. Pure; run in a thread (module docstring)."""
    forecasts = []
    newly_overdue: dict[str, list[str]] = defaultdict(list)
    for registration in found:
        group = (registration.project_id, registration.market_code, registration.registration_type)
        bins = curves.get(group, [])
        forecast = model.forecast(registration.clock, bins, registration.eta_date, now)
        forecasts.append((registration.id, forecast))
        if forecast.overdue and not registration.overdue:
            newly_overdue[registration.status].append(registration.id)
    return forecasts, newly_overdue


async def refresh(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    now: datetime,
    stop_at: float | None = None,
    forecast_batch: int = FORECAST_BATCH,
) -> Report:
    """One run of the four steps (module docstring), each in its own short transactions; `stop_at`
    (a `time.monotonic()` reading) ends step 1 early, and the run with it (the figures then wait
    for a run that catches up), or step 4 between two batches of `forecast_batch`. One run at a
    time across processes: while another runs, this one does nothing (`Report.busy`)."""
    async with repository.alone(sessionmaker) as held:
        if not held:
            return Report(0, 0, 0, complete=True, busy=True)
        return await _run(sessionmaker, now=now, stop_at=stop_at, forecast_batch=forecast_batch)


async def _run(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    now: datetime,
    stop_at: float | None,
    forecast_batch: int,
) -> Report:
    def out_of_time() -> bool:
        return stop_at is not None and time.monotonic() >= stop_at

    derived = 0
    cursor: str | None = ""
    while cursor is not None:
        async with sessionmaker.begin() as session:
            batch, cursor = await derive_stale(session, cursor, now)
        derived += batch
        if cursor is not None and out_of_time():
            return Report(derived, 0, 0, complete=False)
    async with sessionmaker.begin() as session:
        stay_bins = await repository.stay_bins(session, now)
        figures = await asyncio.to_thread(time_in_state_rows, stay_bins, now)
        await repository.replace_time_in_state(session, figures)
        clock_bins = await repository.clock_bins(session, now)
        curve_rows = await asyncio.to_thread(decision_curve_rows, clock_bins, now)
        await repository.replace_decision_curves(session, curve_rows)
    curves: dict[Group, Bins] = {
        (row["project_id"], row["market_code"], row["registration_type"]): [
            (int(k), int(outcome), float(count)) for k, outcome, count in row["bins"]
        ]
        for row in curve_rows
    }
    forecast = overdue = 0
    while True:
        async with sessionmaker.begin() as session:
            count, became = await forecast_stalest(session, curves, now, forecast_batch)
        forecast += count
        overdue += became
        if count < forecast_batch:
            return Report(derived, forecast, overdue, complete=True)
        if out_of_time():
            return Report(derived, forecast, overdue, complete=False)
