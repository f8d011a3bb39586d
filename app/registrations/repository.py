"""SQL over registrations and their history. Nothing here commits: callers own the transaction.

Locking: `lock()` takes the registration's row lock on PostgreSQL (`SELECT ... FOR UPDATE`); on
SQLite every transaction already holds the writer lock from its start (see app/db.py), which
serializes all writers and so every registration too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import insert_for
from app.models import (
    REGISTRATION_HISTORY,
    REGISTRATIONS,
    SYNC_STATE,
    HistorySource,
    Registration,
    RegistrationHistory,
    SyncState,
)

# A trusted callback's two writes, as Core statements built once (building a statement per event
# costs more than running it). Parameters: p_registration, p_from, p_to, p_at, p_event, p_now.
ADD_CALLBACK_HISTORY = insert(REGISTRATION_HISTORY).values(
    registration_id=bindparam("p_registration"),
    from_status=bindparam("p_from"),
    to_status=bindparam("p_to"),
    at=bindparam("p_at"),
    source=HistorySource.CALLBACK.value,
    event_id=bindparam("p_event"),
    recorded_at=bindparam("p_now"),
)
MOVE_STATUS = (
    update(REGISTRATIONS)
    .where(REGISTRATIONS.c.id == bindparam("p_registration"))
    .values(
        status=bindparam("p_to"),
        status_changed_at=bindparam("p_at"),
        callback_applied_at=bindparam("p_now"),
        updated_at=bindparam("p_now"),
    )
)


async def lock(session: AsyncSession, registration_id: str) -> Registration | None:
    """The registration, locked until the transaction ends; None if it is not known."""
    result = await session.execute(
        select(Registration)
        .where(Registration.id == registration_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return result.scalar_one_or_none()


async def insert_if_absent(session: AsyncSession, values: dict[str, Any]) -> bool:
    """Insert a registration unless one with its id exists (another process may be inserting it
    at this very moment: the loser of that race sees False and then locks the winner's row)."""
    table = REGISTRATIONS
    statement = (
        insert_for(session.get_bind().dialect.name, table)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(table.c.id)
    )
    result = await session.execute(statement)
    return result.scalar_one_or_none() is not None


def add_history(
    session: AsyncSession,
    *,
    registration_id: str,
    from_status: str | None,
    to_status: str,
    at: datetime,
    source: str,
    event_id: str | None,
    recorded_at: datetime,
    note: str | None = None,
) -> None:
    session.add(
        RegistrationHistory(
            registration_id=registration_id,
            from_status=from_status,
            to_status=to_status,
            at=at,
            source=source,
            event_id=event_id,
            recorded_at=recorded_at,
            note=note,
        )
    )


async def get_mark(session: AsyncSession, name: str) -> datetime | None:
    """A named time the worker keeps (the reconciliation watermark); None if never set."""
    row = await session.get(SyncState, name)
    return row.value if row is not None else None


async def set_mark(session: AsyncSession, name: str, value: datetime, *, now: datetime) -> None:
    table = SYNC_STATE
    statement = insert_for(session.get_bind().dialect.name, table).values(
        name=name, value=value, updated_at=now
    )
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["name"], set_={"value": value, "updated_at": now}
        )
    )
