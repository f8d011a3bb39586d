"""The counts (`GET /v1/counts`, /metrics, the console) equal what the rows say, on both
databases, through every kind of write: callbacks kept in batches, events finished, replayed and
pruned, registrations created and moved; before and after the worker folds them; and the
migration's backfill counts rows kept before it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.db import utcnow
from app.core.models import CallbackEvent, EventState
from app.counts import service as counts
from app.events import repository as events
from tests.api.conftest import put_registration
from tests.support.counts import shown as _shown
from tests.support.counts import truth as _truth
from tests.support.projects import settings_project

Sessions = async_sessionmaker[AsyncSession]


def _callback(project_id: str, number: int, at: datetime) -> events.NewCallback:
    return events.NewCallback(
        project_id=project_id,
        dedup_key=f"count-{number}",
        event_id=f"count-{number}",
        registration_id=f"reg-{number % 3}",
        body=b"{}",
        headers={},
        peer=None,
        secret_index=0,
        received_at=at,
    )


async def test_counts_equal_the_rows_through_every_write_and_fold(
    sessionmaker: Sessions, v1: httpx.AsyncClient
) -> None:
    now = utcnow().replace(microsecond=0)
    # Whole milliseconds: the lag sums are then exact in the database's time arithmetic.
    times = [now - timedelta(hours=h, minutes=7) for h in (0, 0, 1, 5, 30)]
    async with sessionmaker.begin() as session:
        connection = await session.connection()
        project = await settings_project(session)
        await events.store_callbacks(
            connection, [_callback(project, n, t) for n, t in enumerate(times)]
        )
        # A duplicate adds no event.
        await events.store_callbacks(connection, [_callback(project, 0, times[0])])
    ids = {n: i for n, i in enumerate(sorted(await _ids(sessionmaker)))}
    async with sessionmaker.begin() as session:
        for n, state in (
            (0, EventState.PROCESSED),
            (1, EventState.FAILED),
            (3, EventState.INVALID),
        ):
            await session.execute(
                events.FINISH,
                events.finish_params(
                    ids[n], state, "test", times[n] + timedelta(milliseconds=1500)
                ),
            )
    for status in ("IN_QUEUE", "IN_QUEUE", "PENDING"):
        await put_registration(
            sessionmaker, f"r-{status}-{id(status)}-{utcnow().timestamp()}", status
        )
    await put_registration(sessionmaker, "r-moves", "IN_QUEUE")
    await put_registration(sessionmaker, "r-moves", "APPROVED", at=datetime(2026, 1, 2, tzinfo=UTC))
    assert await _shown(sessionmaker, now) == await _truth(sessionmaker, now)

    await counts.fold(sessionmaker, now)
    assert await _shown(sessionmaker, now) == await _truth(sessionmaker, now)

    async with sessionmaker.begin() as session:  # a replay, then pruning
        assert await events.reset_for_replay(session, ids[0])
        assert await events.reset_for_replay(session, ids[1])  # failed, replayed, processed
        await session.execute(
            events.FINISH,
            events.finish_params(ids[1], EventState.PROCESSED, "x", now),
        )
    async with sessionmaker.begin() as session:
        assert (
            await events.prune(
                session,
                processed_before=now + timedelta(seconds=1),
                states=(EventState.PROCESSED, EventState.INVALID),
                limit=100,
            )
            == 2
        )
    expected = await _truth(sessionmaker, now)
    assert await _shown(sessionmaker, now) == expected
    assert expected["events"] == {"received": 3, "processed": 0, "failed": 0, "invalid": 0}
    await counts.fold(sessionmaker, now)
    assert await _shown(sessionmaker, now) == expected

    answer = (await v1.get("/v1/counts")).json()
    assert answer["eventsByState"] == expected["events"]
    assert answer["registrationsByStatus"] == expected["registrations"]
    assert len(answer["hours"]) == 24
    metrics = (await v1.get("/metrics")).text
    assert 'sinch_events{state="received"} 3.0' in metrics
    assert 'sinch_registrations{status="APPROVED"} 1.0' in metrics


async def _ids(sessionmaker: Sessions) -> list[int]:
    async with sessionmaker() as session:
        return list((await session.execute(select(CallbackEvent.id))).scalars())


async def test_counts_stay_exact_while_writers_and_folds_run_at_once(
    sessionmaker: Sessions,
) -> None:
    """Writers inserting batches and finishing events, and folds, all concurrently: no delta is
    lost or folded twice."""
    now = utcnow().replace(microsecond=0)
    writers_done = asyncio.Event()

    async def writer(number: int) -> None:
        for batch in range(15):
            base = number * 1000 + batch * 10
            async with sessionmaker.begin() as session:
                project = await settings_project(session)
                callbacks = [
                    _callback(project, base + i, now - timedelta(minutes=i)) for i in range(4)
                ]
                connection = await session.connection()
                stored = await events.store_callbacks(connection, callbacks)
            async with sessionmaker.begin() as session:
                row = stored[0].row_id
                assert row is not None
                await session.execute(
                    events.FINISH,
                    events.finish_params(row, EventState.PROCESSED, "t", now),
                )

    async def folder() -> int:
        folds = 0
        while not writers_done.is_set():
            await counts.fold(sessionmaker, now)
            folds += 1
            await asyncio.sleep(0)
        return folds

    fold_task = asyncio.create_task(folder())
    await asyncio.gather(*(writer(n) for n in range(4)))
    writers_done.set()
    assert await fold_task >= 1
    expected = await _truth(sessionmaker, now)
    assert expected["events"] == {"received": 180, "processed": 60, "failed": 0, "invalid": 0}
    assert await _shown(sessionmaker, now) == expected
    await counts.fold(sessionmaker, now)
    assert await _shown(sessionmaker, now) == expected
