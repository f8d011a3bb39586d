"""The forecasts cron's work on a real database: stays from Sinch's logs and the history, the
figures per market and state, forecasts, and the `overdue` change recorded once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.jobs import create_redis
from app.core.models import (
    ChangeKind,
    RegistrationChange,
    RegistrationForecast,
    RegistrationStay,
    TimeInState,
)
from app.core.settings import Settings
from app.forecasts import repository, service
from app.worker import tasks
from app.worker.context import WorkerContext
from tests.api.conftest import put_document

Sessions = async_sessionmaker[AsyncSession]
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def sinch_time(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat()


def document(
    registration_id: str, market: str, steps: list[tuple[str, datetime]], **extra: Any
) -> dict[str, Any]:
    """A Sinch document whose logs tell its whole life (steps: state, Sinch's time)."""
    status, last = steps[-1]
    return {
        "id": registration_id,
        "status": status,
        "registrationType": "ALPHANUMERIC_SENDER_ID",
        "marketCode": market,
        "createTime": sinch_time(steps[0][1]),
        "updateTime": sinch_time(last),
        "logs": [
            {"registrationState": state, "createTime": sinch_time(at), "message": state}
            for state, at in steps
        ],
        **extra,
    }


async def gb_history(sessionmaker: Sessions) -> None:
    """25 decided GB registrations: 1 day IN_QUEUE, then 2..26 days IN_PROGRESS, approved."""
    start = NOW - 60 * DAY
    for n in range(25):
        await put_document(
            sessionmaker,
            document(
                f"gb-{n:02}",
                "GB",
                [
                    ("IN_QUEUE", start),
                    ("IN_PROGRESS", start + DAY),
                    ("APPROVED", start + DAY + (2 + n) * DAY),
                ],
            ),
        )


async def test_figures_forecasts_and_one_overdue_change(sessionmaker: Sessions) -> None:
    await gb_history(sessionmaker)
    # Waiting on Sinch for 40 days: past GB's p85 (about 24 days). Another 3 days in: on time.
    await put_document(
        sessionmaker,
        document("gb-late", "GB", [("IN_QUEUE", NOW - 40 * DAY), ("IN_PROGRESS", NOW - 39 * DAY)]),
    )
    await put_document(sessionmaker, document("gb-new", "GB", [("IN_QUEUE", NOW - 3 * DAY)]))
    # A market with two decisions only, and Sinch's etaDate.
    await put_document(
        sessionmaker,
        document("fr-1", "FR", [("IN_QUEUE", NOW - 2 * DAY)], etaDate="2026-06-20"),
    )

    report = await service.refresh(sessionmaker, now=NOW)
    assert report.derived == 28
    assert report.complete
    assert report.overdue == 1

    async with sessionmaker() as session:
        stays = await session.scalar(select(func.count()).select_from(RegistrationStay))
        # 25 decided with 2 stays each, gb-late 2 (one open), gb-new 1, fr-1 1.
        assert stays == 54
        month = (NOW - 60 * DAY).date()  # the oldest stays began then: the widest window
        figures = {
            (row.market_code, row.status): row
            for row in await session.scalars(
                select(TimeInState).where(TimeInState.since_month == month.replace(day=1))
            )
        }
        in_progress = figures[("GB", "IN_PROGRESS")]
        assert (in_progress.samples, in_progress.open) == (25, 1)
        # Stays of 2..26 days: the median is the 13th, 14 days, read from bins (at most 10 % late).
        assert in_progress.p50 is not None
        assert 14 * 86_400 <= in_progress.p50 <= 14 * 86_400 * 1.1
        queue = figures[("GB", "IN_QUEUE")]
        assert (queue.samples, queue.open) == (26, 1)

        forecasts = {
            row.registration_id: row for row in await session.scalars(select(RegistrationForecast))
        }
        assert forecasts["gb-late"].overdue
        assert forecasts["gb-late"].basis == "history"
        assert not forecasts["gb-new"].overdue
        new_p50 = forecasts["gb-new"].decision_p50
        assert new_p50 is not None
        assert NOW < new_p50 < NOW + 30 * DAY
        assert forecasts["fr-1"].basis == "sinch-eta"
        assert forecasts["fr-1"].samples == 0
        assert forecasts["gb-00"].basis == "decided"

    # Another run finds it still overdue: no second change.
    again = await service.refresh(sessionmaker, now=NOW + DAY)
    assert again.derived == 0
    assert again.overdue == 0
    async with sessionmaker() as session:
        overdue_changes = (
            await session.scalars(
                select(RegistrationChange).where(RegistrationChange.kind == ChangeKind.OVERDUE)
            )
        ).all()
    assert [(c.registration_id, c.status, c.source) for c in overdue_changes] == [
        ("gb-late", "IN_PROGRESS", "forecast")
    ]


async def test_a_registration_written_again_is_derived_again(sessionmaker: Sessions) -> None:
    await put_document(sessionmaker, document("r", "GB", [("IN_QUEUE", NOW - 2 * DAY)]))
    await service.refresh(sessionmaker, now=NOW)
    await put_document(
        sessionmaker,
        document("r", "GB", [("IN_QUEUE", NOW - 2 * DAY), ("REJECTED", NOW - DAY)]),
    )
    report = await service.refresh(sessionmaker, now=NOW)
    assert report.derived == 1
    async with sessionmaker() as session:
        row = await session.get(RegistrationForecast, "r")
        assert row is not None
        assert (row.outcome, row.basis, row.overdue) == ("REJECTED", "decided", False)
        stays = (await session.scalars(select(RegistrationStay))).all()
    assert [(s.status, s.left_at) for s in stays] == [("IN_QUEUE", NOW - DAY)]


async def test_more_than_a_batch_is_derived_and_a_run_out_of_time_goes_on_next_time(
    sessionmaker: Sessions,
) -> None:
    """Step 1 pages by id: every registration is derived, the second batch included, and a run
    stopped at its budget after the first batch leaves the rest to the next run."""
    count = service.STALE_BATCH + 3
    for n in range(count):
        await put_document(sessionmaker, document(f"r-{n:04}", "GB", [("IN_QUEUE", NOW - DAY)]))
    stopped = await service.refresh(sessionmaker, now=NOW, stop_at=0.0)  # out of time at once
    assert (stopped.derived, stopped.complete) == (service.STALE_BATCH, False)
    report = await service.refresh(sessionmaker, now=NOW)
    assert (report.derived, report.complete) == (3, True)
    async with sessionmaker() as session:
        derived = await session.scalar(select(func.count()).select_from(RegistrationForecast))
    assert derived == count


async def test_a_run_out_of_time_in_step_4_leaves_the_freshest_and_none_for_good(
    sessionmaker: Sessions,
) -> None:
    """Step 4 stops at the budget between batches, and each run forecasts the stalest first: a
    registration whose clock changed first, then those forecast longest ago. Runs over more than
    their budget allows still reach every registration, in turn."""
    for n in range(5):
        await put_document(sessionmaker, document(f"r-{n}", "GB", [("IN_QUEUE", NOW - DAY)]))

    async def forecast_at() -> dict[str, datetime | None]:
        async with sessionmaker() as session:
            rows = await session.execute(
                select(RegistrationForecast.registration_id, RegistrationForecast.forecast_at)
            )
            return dict(rows.tuples().all())

    # Out of time at once: one batch of 2 per run (the first batch always goes).
    first = await service.refresh(sessionmaker, now=NOW, stop_at=0.0, forecast_batch=2)
    assert (first.derived, first.forecast, first.complete) == (5, 2, False)
    after_first = await forecast_at()
    assert sorted(at for at in after_first.values() if at is not None) == [NOW, NOW]

    second = await service.refresh(sessionmaker, now=NOW + DAY, stop_at=0.0, forecast_batch=2)
    assert (second.derived, second.forecast, second.complete) == (0, 2, False)
    after_second = await forecast_at()
    # Two never forecast went, not the two forecast a day before.
    went = {one for one, at in after_second.items() if at == NOW + DAY}
    assert len(went) == 2
    assert went <= {one for one, at in after_first.items() if at is None}

    # One of those whose clock then changes (derived again) goes before the two forecast longest
    # ago, with the one never forecast yet.
    changed = max(went)
    await put_document(
        sessionmaker,
        document(changed, "GB", [("IN_QUEUE", NOW - DAY), ("IN_PROGRESS", NOW - DAY / 2)]),
    )
    third = await service.refresh(sessionmaker, now=NOW + 2 * DAY, stop_at=0.0, forecast_batch=2)
    assert (third.derived, third.forecast, third.complete) == (1, 2, False)
    after_third = await forecast_at()
    never = {one for one, at in after_second.items() if at is None}
    assert {one for one, at in after_third.items() if at == NOW + 2 * DAY} == {changed, *never}
    assert list(after_third.values()).count(NOW) == 2

    # Then by when they were last forecast: the two of the first run, the oldest, in turn (not
    # the lowest id again, forecast by the run before).
    fourth = await service.refresh(sessionmaker, now=NOW + 3 * DAY, stop_at=0.0, forecast_batch=1)
    fifth = await service.refresh(sessionmaker, now=NOW + 4 * DAY, stop_at=0.0, forecast_batch=1)
    assert (fourth.forecast, fifth.forecast) == (1, 1)
    after_fifth = await forecast_at()
    oldest = sorted(one for one, at in after_third.items() if at == NOW)
    assert [after_fifth[one] for one in oldest] == [NOW + 3 * DAY, NOW + 4 * DAY]

    # Given the time, a run goes through every one left.
    last = await service.refresh(sessionmaker, now=NOW + 5 * DAY, forecast_batch=2)
    assert (last.forecast, last.complete) == (5, True)
    assert set((await forecast_at()).values()) == {NOW + 5 * DAY}


async def test_one_run_at_a_time(sessionmaker: Sessions) -> None:
    """While a run holds the lock (another worker's, here held by hand), a second one does
    nothing, so that no `overdue` change is recorded twice; once released, runs go on."""
    await put_document(
        sessionmaker,
        document("gb-late", "GB", [("IN_QUEUE", NOW - 40 * DAY), ("IN_PROGRESS", NOW - 39 * DAY)]),
    )
    async with repository.alone(sessionmaker) as held:
        assert held
        busy = await service.refresh(sessionmaker, now=NOW)
        assert busy.busy and (busy.derived, busy.forecast) == (0, 0)
        # The holder keeps no transaction open through the run (autocommit): idle, not "idle in
        # transaction".
        async with sessionmaker() as session:
            holder = await session.scalar(
                text(
                    "SELECT a.state FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                    " WHERE l.locktype = 'advisory' AND l.objid = :key AND l.granted"
                ),
                {"key": repository.RUN_LOCK},
            )
        assert holder == "idle"
    # A run that fails lets the lock go too.

    async def failing_run() -> None:
        async with repository.alone(sessionmaker) as held:
            assert held
            raise RuntimeError("the run failed")

    with pytest.raises(RuntimeError):
        await failing_run()
    report = await service.refresh(sessionmaker, now=NOW)
    assert not report.busy and report.derived == 1


async def test_the_cron_in_a_process_without_a_sequencer_numbers_its_overdue_change(
    settings: Settings, sessionmaker: Sessions
) -> None:
    """The delivery worker runs the cron and no sequencer: the `overdue` change it records is on
    the feed (numbered, its deliveries written) when the job ends, not at another process's next
    look."""
    await gb_history(sessionmaker)
    await put_document(
        sessionmaker,
        document("gb-late", "GB", [("IN_QUEUE", NOW - 40 * DAY), ("IN_PROGRESS", NOW - 39 * DAY)]),
    )
    redis = create_redis(settings)
    try:
        ctx: WorkerContext = {"settings": settings, "sessionmaker": sessionmaker, "redis": redis}
        await tasks.refresh_forecasts(ctx)
    finally:
        await redis.aclose()
    async with sessionmaker() as session:
        [change] = await session.scalars(
            select(RegistrationChange).where(RegistrationChange.kind == ChangeKind.OVERDUE)
        )
    assert change.registration_id == "gb-late"
    assert change.seq is not None
