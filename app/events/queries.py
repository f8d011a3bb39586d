"""Read-side SQL of the internal API over kept callback events. Never writes.

Listings are newest first, keyset-paginated on the id (ids only grow, so a walk never sees a row
twice and never misses one that existed when it started): the primary key without a filter,
(state, id) with `state`, (registration_id, id) with `registrationId` (migrations 0001, 0002),
(outcome, id) of finished events with `outcome` (migration 0009).
The headers are never loaded. The body is, only to read what it claims (a status and its time,
`EventOut.of`); no answer shows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import load_only

from app.core.filtering import where_given
from app.core.models import CallbackEvent, EventState
from app.projects.queries import within
from app.tokens.principal import Visible

MAX_ROW_ID = 2**63 - 1
"""The largest id the database stores (BIGINT)."""

_SHOWN = load_only(
    CallbackEvent.id,
    CallbackEvent.project_id,
    CallbackEvent.dedup_key,
    CallbackEvent.event_id,
    CallbackEvent.registration_id,
    CallbackEvent.body,  # parsed for `claimedStatus`, `claimedAt`
    CallbackEvent.state,
    CallbackEvent.outcome,
    CallbackEvent.attempts,
    CallbackEvent.last_error,
    CallbackEvent.received_at,
    CallbackEvent.processed_at,
    CallbackEvent.duplicate_count,
    raiseload=True,
)


class EventKey(BaseModel):
    """Where a listing of events stopped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int = Field(ge=1, le=MAX_ROW_ID)


@dataclass(frozen=True, slots=True)
class EventFilters:
    state: EventState | None = None
    registration_id: str | None = None
    outcome: str | None = None
    """Exactly this outcome (e.g. `failed:rejected`)."""
    projects: Visible = None
    """Only these projects' events (None: every project); one walks (project_id, id)."""


def event_statement(row_id: int, visible: Visible = None) -> Select[CallbackEvent]:
    statement = select(CallbackEvent).where(CallbackEvent.id == row_id).options(_SHOWN)
    return within(statement, CallbackEvent.project_id, visible)


async def get_event(
    session: AsyncSession, row_id: int, visible: Visible = None
) -> CallbackEvent | None:
    """The event, when it is kept and belongs to one of `visible` (None: any project)."""
    result = await session.execute(event_statement(row_id, visible))
    return result.scalar_one_or_none()


def list_statement(
    filters: EventFilters, *, before: EventKey | None, limit: int
) -> Select[CallbackEvent]:
    """Events matching `filters` older than `before`, newest first, at most `limit` of them."""
    statement = within(
        select(CallbackEvent).options(_SHOWN), CallbackEvent.project_id, filters.projects
    )
    statement = where_given(
        statement,
        (CallbackEvent.state, filters.state),
        (CallbackEvent.registration_id, filters.registration_id),
        (CallbackEvent.outcome, filters.outcome),
    )
    if before is not None:
        statement = statement.where(CallbackEvent.id < before.id)
    return statement.order_by(CallbackEvent.id.desc()).limit(limit)


async def list_events(
    session: AsyncSession, filters: EventFilters, *, before: EventKey | None, limit: int
) -> Sequence[CallbackEvent]:
    result = await session.execute(list_statement(filters, before=before, limit=limit))
    return result.scalars().all()


def key_of(event: CallbackEvent) -> EventKey:
    return EventKey(id=event.id)


async def get_raw_event(
    session: AsyncSession, row_id: int, visible: Visible = None
) -> CallbackEvent | None:
    """One event of `visible`'s projects with everything kept, its raw body and headers included
    (the console's detail page, for people with a session; the internal API never answers
    them)."""
    statement = select(CallbackEvent).where(CallbackEvent.id == row_id)
    result = await session.execute(within(statement, CallbackEvent.project_id, visible))
    return result.scalar_one_or_none()
