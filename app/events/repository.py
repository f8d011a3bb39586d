"""SQL over kept callback events. Nothing here commits: callers own the transaction."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import CallbackEvent, EventState


async def received_before(session: AsyncSession, cutoff: datetime, limit: int) -> list[int]:
    """Ids of events still `received` that arrived before `cutoff`, oldest first."""
    result = await session.execute(
        select(CallbackEvent.id)
        .where(CallbackEvent.state == EventState.RECEIVED, CallbackEvent.received_at < cutoff)
        .order_by(CallbackEvent.received_at, CallbackEvent.id)
        .limit(limit)
    )
    return list(result.scalars())


async def ids_in_state(session: AsyncSession, state: EventState) -> list[int]:
    result = await session.execute(
        select(CallbackEvent.id).where(CallbackEvent.state == state).order_by(CallbackEvent.id)
    )
    return list(result.scalars())


async def prune(
    session: AsyncSession, *, processed_before: datetime, states: tuple[EventState, ...], limit: int
) -> int:
    """Delete up to `limit` events in `states` processed before the cutoff; answers how many."""
    doomed = (
        select(CallbackEvent.id)
        .where(CallbackEvent.state.in_(states), CallbackEvent.processed_at < processed_before)
        .limit(limit)
        .scalar_subquery()
    )
    result = await session.execute(delete(CallbackEvent).where(CallbackEvent.id.in_(doomed)))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
