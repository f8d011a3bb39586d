"""Read-side SQL of the audit trail. Never writes.

Newest first, keyset-paginated on the id (ids only grow): the primary key without a filter,
(actor, id) and (action, id) with one (migration 0008).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.models import AuditEntry
from app.projects.queries import within
from app.tokens.principal import Visible

MAX_ROW_ID = 2**63 - 1


class AuditKey(BaseModel):
    """Where a listing of the audit trail stopped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int = Field(ge=1, le=MAX_ROW_ID)


def key_of(entry: AuditEntry) -> AuditKey:
    return AuditKey(id=entry.id)


async def recent(
    session: AsyncSession,
    *,
    limit: int,
    before: AuditKey | None = None,
    actor: str | None = None,
    action: str | None = None,
    projects: Visible = None,
) -> Sequence[AuditEntry]:
    """Entries older than `before` (all when None), newest first, at most `limit`; optionally
    only those of one actor or one action; only those of `projects` when given (a
    deployment-wide entry, of no project, is then left out). The console lists recent entries
    with this too."""
    statement = within(select(AuditEntry), AuditEntry.project_id, projects)
    if actor is not None:
        statement = statement.where(AuditEntry.actor == actor)
    if action is not None:
        statement = statement.where(AuditEntry.action == action)
    if before is not None:
        statement = statement.where(AuditEntry.id < before.id)
    result = await session.execute(statement.order_by(AuditEntry.id.desc()).limit(limit))
    return result.scalars().all()
