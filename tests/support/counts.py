"""The counts two ways: as the service reads them (`shown`) and computed from the rows at any
cost (`truth`), for the tests that hold the first to the second."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.models import CallbackEvent, EventState, Registration
from app.counts import service as counts

Sessions = async_sessionmaker[AsyncSession]


async def truth(sessionmaker: Sessions, now: datetime) -> dict[str, object]:
    """The counts computed from the rows themselves (what the tables say, at any cost)."""
    async with sessionmaker() as session:
        by_state = dict(
            (
                await session.execute(
                    select(CallbackEvent.state, func.count()).group_by(CallbackEvent.state)
                )
            ).all()
        )
        by_status = dict(
            (
                await session.execute(
                    select(Registration.status, func.count()).group_by(Registration.status)
                )
            ).all()
        )
        rows = (
            await session.execute(select(CallbackEvent.received_at, CallbackEvent.processed_at))
        ).all()
    hours = []
    current = now.replace(minute=0, second=0, microsecond=0)
    for back in range(counts.SERIES_HOURS - 1, -1, -1):
        start = current - timedelta(hours=back)
        end = start + timedelta(hours=1)
        finished = [(r, p) for r, p in rows if p is not None and start <= p < end]
        hours.append(
            (
                sum(1 for r, _ in rows if start <= r < end),
                len(finished),
                sum(round((p - r).total_seconds() * 1000) for r, p in finished),
            )
        )
    return {
        "events": {state.value: by_state.get(state.value, 0) for state in EventState},
        "registrations": by_status,
        "hours": hours,
    }


async def shown(sessionmaker: Sessions, now: datetime) -> dict[str, object]:
    async with sessionmaker() as session:
        read = await counts.read(session, now, projects=None)
    return {
        "events": read.events_by_state,
        "registrations": read.registrations_by_status,
        "hours": [(h.received, h.finished, h.lag_ms) for h in read.hours],
    }
